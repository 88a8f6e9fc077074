"""The producer: Kafka's producer semantics over a :class:`~pylog.client.transport.Transport`.

Records are batched per partition exactly as Kafka's producer batches them (``batch_size``,
``linger_ms``, one codec per batch) into real v2 batches, numbered per partition for the
idempotent producer, and sent by the sender.  The sender has no rounds: each step
handles the answers that came, drains the ready batches of every partition that may
send, and hands them to
:meth:`Transport.produce_async <pylog.client.transport.Transport.produce_async>` in one
call without waiting (a network transport sends one Produce request per leader and
reports each partition as its answer comes; the embedded transport appends through
:meth:`pylog.broker.core.Broker.produce_batches`, the code path the wire-protocol
server's Produce uses, and answers before it returns).  So a leader that is slow, or
hangs until the request times out, holds back only its own partitions.  Each batch is
its own request, answered on its own, so an answer frees its slot at once.

Over the network (a transport with ``add_io_task``) the sending itself runs on the
network client's I/O thread, as librdkafka's broker thread does: a record appended, a
linger or backoff timer due, or an answer that frees a slot of ``max_in_flight`` runs a
step there that drains what may go and writes its Produce requests in the same turn of
the I/O loop, so a record crosses one thread on its way to the socket.  An answer in
which every batch was appended is accounted there too.  What may block or run user
code stays with the sender thread: answers with errors (retries, splits, failing),
the epoch bump, the periodic metadata refresh, failing batches past
``delivery_timeout_ms`` and the handles' callbacks; the I/O thread hands those over
(and leaves the whole step to the sender when the sender holds its state).  Over the
embedded transport the sender thread does every step.

Delivery
--------
- ``acks``: 0 (handles resolve with offset -1), 1 or ``"all"`` (-1).  On one node 1 and all
  both mean "appended to the partition log"; ``"all"`` also enforces the topic's
  ``min.insync.replicas``.
- Requests out per partition (``max_in_flight_requests_per_connection``, alias
  ``max_in_flight``, default 5, at most 5 with idempotence as Kafka requires): an
  idempotent producer keeps up to that many of a partition's batches out at once, in
  one request or several, while the ones before are unanswered (the first batch of each
  producer epoch goes alone: a broker that does not know the producer yet would take a
  later sequence first).  Without idempotence a partition also keeps up to that many
  batches out at once, each its own request, so, as Kafka documents for
  ``max.in.flight.requests.per.connection`` > 1, a batch refused and retried may be
  appended after later batches of its partition, and one appended whose answer was lost
  is appended again (at least once).  A producer without idempotence keeps the order of
  a partition's records only with ``max_in_flight=1``.  Answers are handled as they
  come: an appended batch's handles resolve at once.
- Retriable errors are retried with exponential backoff (``retry_backoff_ms`` doubling up to
  ``retry_backoff_max_ms``, 20 % jitter) until ``retries`` or ``delivery_timeout_ms`` run
  out.  A partition with a failed batch sends nothing more until all its requests out
  are answered; then its failed batches go back first in its queue, in the order they
  were sent, and go again on their own, answered before anything later of the
  partition is sent.  With idempotence (or ``max_in_flight=1``) the order of a
  partition's records is their send order whatever is retried (the broker refuses the
  later batches of a refused one as OUT_OF_ORDER_SEQUENCE, and they go again after it),
  and a retried batch that was appended stays among the 5 batches the broker recognises
  as duplicates.
- Idempotence (the default, as in Kafka 3+): the producer gets a producer id from the
  broker; each batch carries the partition's next sequence number; a retried batch keeps
  its number, so if it was appended after all the broker answers with the original
  offsets instead of appending it twice.  The later batches of a partition that the
  broker refused as OUT_OF_ORDER_SEQUENCE because an earlier one failed are retried
  with it, not failed.  OUT_OF_ORDER_SEQUENCE / UNKNOWN_PRODUCER_ID on a partition's
  first unappended batch means the broker lost track of the producer: the sender bumps
  the producer epoch (KIP-360) and renumbers what is pending, once every request out is
  answered and every partition whose failed batches may have been appended (an answer
  lost or timed out) has had them answered under their old numbers; meanwhile only
  those retries are sent.  A batch known to be appended (a later one of its partition
  was) that the broker no longer remembers completes with offset -1, as Kafka's
  producer does on DUPLICATE_SEQUENCE_NUMBER.  A batch that fails for good on a definite refusal rewinds
  its partition's numbering so later batches are not rejected for a gap; one that
  fails for good on an error that leaves open whether it was appended (a timeout,
  ``delivery_timeout_ms`` after it was sent) bumps the epoch instead, so its sequence
  is never given to another batch (Kafka's unresolved sequences).
- A batch of several records refused as MESSAGE_TOO_LARGE (the topic's
  ``max.message.bytes`` was lowered after the producer read it) is split, as Kafka's
  producer does: into batches of at most ``batch_size`` and the topic's limit (re-read
  then; else half the refused batch, so splitting again always ends), put back first in
  the partition's queue, in order; a record still too large then fails alone with
  RecordTooLargeError, and every other handle reports its own record's offset.  The
  split batches take the refused batch's sequence range (it was not appended), so the
  partition's later batches, refused behind it as OUT_OF_ORDER_SEQUENCE, keep their
  numbers and go again after them.  Splits are counted (``batch_split_count``, Kafka's
  batch-split-total) and logged at WARNING.
- ``delivery_timeout_ms`` fails a batch that waits to be sent or retried past it; a batch
  on the wire is bounded by the producer's ``request_timeout_ms`` and by its delivery
  timeout: its request times out at whichever comes first (as Kafka's Sender expires
  in-flight batches), and past its delivery timeout the batch fails for good.
- ``buffer_memory`` counts every record accepted and not yet answered, whether it waits,
  is out or waits for a retry.

Transactions
------------
With ``transactional_id`` the producer is Kafka's transactional producer
(``init_transactions``, ``begin_transaction``, ``send_offsets_to_transaction``,
``commit_transaction``, ``abort_transaction``; :mod:`pylog.client.transactions` holds the
state machine): its batches carry the transactional attribute, each partition is added
to the transaction before its first batch goes (over the network, AddPartitionsToTxn
is sent without waiting as soon as the partition's first record is queued, as Kafka's
producer does, and the network thread that brings the answer sends the partition's
waiting batches), a batch that fails for good
(or would need an epoch bump) makes the transaction abortable instead of bumping the
epoch, and ``send`` outside a transaction raises IllegalStateError.

Threads
-------
``send``, ``send_batch``, ``flush`` and ``close`` may be called from any thread.  One sender
thread per producer handles the answers with errors (handed over by the transport's
threads) and runs the handles' callbacks; a callback must not block on another send's
result.  Over the embedded transport it also sends; over the network the I/O thread
does (see above).  The sender's state (requests out, retries, epoch bump) is held under
one lock by the sender's step or by the transport's thread sending or taking a clean
answer; the latter never waits for it, never fails a batch and never runs a callback.
"""

from __future__ import annotations

import collections
import inspect
import logging
import random
import threading
import time
from typing import Any, Callable, Mapping

from pylog import _core
from pylog import codecs as _codecs
from pylog.broker.core import ProduceResult
from pylog.broker.partitioner import DefaultPartitioner, Partitioner, partitioner_for_name
from pylog.client.transactions import ABORTABLE_ERROR, ABORTING, IN_TRANSACTION, TransactionManager
from pylog.errors import (IllegalStateError, InvalidConfigError, OutOfOrderSequenceError, PylogError,
                          RequestTimedOutError, UnknownProducerIdError, UnknownTopicOrPartitionError,
                          error_for_code)

__all__ = ["Producer", "RecordMetadata", "FutureRecordMetadata", "BatchSendFuture"]

RecordMetadata = _core.RecordMetadata
FutureRecordMetadata = _core.FutureRecordMetadata
BatchSendFuture = _core.BatchSendFuture

_log = logging.getLogger("pylog.client.producer")

_INT32_MAX = 2**31 - 1
_ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}
_PENDING = 3   # _ProducerBatch.state of a resolved batch
_POOL_IDLE_BYTES = 1 << 20   # batch buffers kept for reuse while the producer is idle ...
_POOL_IDLE_MS = 1000         # ... once idle this long
_MUTED = 2**62               # _PartitionQueue.blocked_until of a partition that may not send now
_MAX_WAIT_S = 3600.0
#: Errors that leave open whether the batch was appended: REQUEST_TIMED_OUT, NETWORK_EXCEPTION
#: (both also raised by the client itself), NOT_ENOUGH_REPLICAS_AFTER_APPEND, UNKNOWN_SERVER_ERROR.
_AMBIGUOUS = frozenset((7, 13, 20, -1))
_DUPLICATE_SEQUENCE = 46
_MESSAGE_TOO_LARGE = 10
_CONCURRENT_TRANSACTIONS = 51
#: Kafka's producer retries an AddPartitionsToTxn refused with CONCURRENT_TRANSACTIONS
#: this soon (the previous transaction of the id is still completing).
_CONCURRENT_BACKOFF_MS = 20


class _Request:
    """The batches of one partition in one produce call, in sequence order; ``seq`` orders
    the calls, so a partition's failed batches can be put back in the order they were sent."""

    __slots__ = ("queue", "batches", "seq")

    def __init__(self, queue: Any, batches: list, seq: int) -> None:
        self.queue = queue
        self.batches = batches
        self.seq = seq


class _Flight:
    """The sender's account of one partition's requests out (sender thread only)."""

    __slots__ = ("requests", "batches", "failed", "acked_epoch", "last_acked", "acks", "retrying")

    def __init__(self) -> None:
        self.requests = 0          # produce calls of the partition not answered yet
        self.batches = 0           # ... and their batches
        self.failed: list = []     # [((seq, k), batch, error)] waiting for the other answers
        self.acked_epoch = -1      # the producer epoch in which one of its batches was last appended
        self.last_acked = (0, -1)  # (seq, k) of the latest batch appended
        self.acks: collections.deque = collections.deque(maxlen=8)   # (seq, k) of the last appended
        self.retrying = 0          # failed batches put back: they go first, alone, then the rest


def _positive_int(name: str, value: Any, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidConfigError(f"{name} must be an int in [{minimum}, {maximum}], got {value!r}")
    return value


class Producer(_core._ProducerCore):
    """A producer over a :class:`~pylog.client.transport.Transport`.

    Usually made with ``client.producer(...)`` (:class:`~pylog.client.client.Client`).
    Settings are Kafka's producer configs in snake_case.

    Parameters
    ----------
    transport : Transport
    acks : {"all", -1, 1, 0}
        Default ``"all"``.
    linger_ms : int
        How long a batch waits for more records before it is sent (default 5, Kafka 4's).
    batch_size : int
        Target batch size in bytes (default 16384).  A record larger than that goes alone.
    compression_type : {"none", "gzip", "snappy", "lz4", "zstd"}
        snappy and zstd need the ``pylog[snappy]`` / ``pylog[zstd]`` extras.
    enable_idempotence : bool, optional
        Default: on, unless ``acks`` is not all or ``retries`` is 0 (then off, as Kafka).
    retries, retry_backoff_ms, retry_backoff_max_ms, delivery_timeout_ms
        Retry policy (defaults 2147483647, 100, 1000, 120000).  ``delivery_timeout_ms``
        bounds a record from ``send`` to its answer, including a request on the wire: a
        batch still unanswered then fails (its request times out then).  It must be at
        least ``linger_ms + request_timeout_ms``, as Kafka requires (a value given lower
        raises InvalidConfigError; the default is raised to it, with a warning).
    request_timeout_ms : int, optional
        How long a Produce request may go unanswered before it fails (retriably) and its
        connection is closed; also the request's timeout for the broker's acks.  Default:
        the transport's (``pylog.connect(request_timeout_ms=...)``, 30000).  The embedded
        transport appends in the call and never waits.
    max_in_flight_requests_per_connection, max_in_flight : int
        Default 5; at most 5 with idempotence.
    buffer_memory : int
        Bytes of records that may wait to be sent (default 32 MiB); ``send`` blocks up to
        ``max_block_ms`` (default 60000) for room, then raises RequestTimedOutError.
    max_request_size : int
        Largest batch (default 1048576); a bigger record raises RecordTooLargeError.
    partitioner : Partitioner or str, optional
        Default :class:`~pylog.broker.partitioner.DefaultPartitioner` (murmur2 of the key,
        sticky for keyless records); ``"round_robin"`` and ``"uniform_sticky"`` or any
        :class:`~pylog.broker.partitioner.Partitioner` instance.
    key_serializer, value_serializer : callable, optional
        Called on non-None keys and values; must return bytes.
    client_id : str
    metadata_max_age_ms : int
        How often partition counts are refreshed (default 300000).

    Raises
    ------
    InvalidConfigError
        A bad or contradictory setting.
    CodecNotInstalledError
        The compression codec's package is missing.
    """

    def __init__(self, transport, *, acks: Any = "all", linger_ms: int = 5, batch_size: int = 16384,
                 compression_type: str | None = "none", enable_idempotence: bool | None = None,
                 retries: int = _INT32_MAX, retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1000,
                 delivery_timeout_ms: int | None = None, max_in_flight_requests_per_connection: int = 5,
                 max_in_flight: int | None = None, buffer_memory: int = 32 * 1024 * 1024,
                 max_block_ms: int = 60_000, max_request_size: int = 1024 * 1024,
                 partitioner: Partitioner | str | None = None,
                 key_serializer: Callable[[Any], bytes] | None = None,
                 value_serializer: Callable[[Any], bytes] | None = None,
                 client_id: str = "pylog-producer", metadata_max_age_ms: int = 300_000,
                 request_timeout_ms: int | None = None, transactional_id: str | None = None,
                 transaction_timeout_ms: int = 60_000) -> None:
        if acks not in _ACKS or isinstance(acks, bool):
            raise InvalidConfigError(f"acks must be 'all', -1, 0 or 1, got {acks!r}")
        self.acks = _ACKS[acks]
        linger_ms = _positive_int("linger_ms", linger_ms)
        batch_size = _positive_int("batch_size", batch_size, maximum=_INT32_MAX)
        retries = _positive_int("retries", retries, maximum=_INT32_MAX)
        self.retry_backoff_ms = _positive_int("retry_backoff_ms", retry_backoff_ms)
        self.retry_backoff_max_ms = max(_positive_int("retry_backoff_max_ms", retry_backoff_max_ms),
                                        self.retry_backoff_ms)
        delivery_given = delivery_timeout_ms is not None
        delivery_timeout_ms = _positive_int("delivery_timeout_ms", 120_000 if delivery_timeout_ms is None
                                            else delivery_timeout_ms, minimum=1)
        if max_in_flight is not None:
            max_in_flight_requests_per_connection = max_in_flight
        in_flight = _positive_int("max_in_flight_requests_per_connection", max_in_flight_requests_per_connection,
                                  minimum=1)
        buffer_memory = _positive_int("buffer_memory", buffer_memory, minimum=1)
        self.max_block_ms = _positive_int("max_block_ms", max_block_ms)
        max_request_size = _positive_int("max_request_size", max_request_size, minimum=1, maximum=_INT32_MAX)
        self.metadata_max_age_ms = _positive_int("metadata_max_age_ms", metadata_max_age_ms, minimum=1)
        # The Produce requests' timeout: ours when the transport takes one (produce_async,
        # or produce when that is all it has), else none we could honour.
        produce_fn = getattr(transport, "produce_async" if getattr(type(transport), "produce_async", None)
                             is not None else "produce", None)
        try:
            takes_timeout = produce_fn is not None and "timeout_ms" in inspect.signature(produce_fn).parameters
        except (TypeError, ValueError):
            takes_timeout = False
        if request_timeout_ms is not None:
            request_timeout_ms = _positive_int("request_timeout_ms", request_timeout_ms, minimum=1,
                                               maximum=_INT32_MAX)
            if not takes_timeout:
                raise InvalidConfigError(f"request_timeout_ms: {type(transport).__name__} takes no request timeout")
        elif takes_timeout:
            request_timeout_ms = getattr(transport, "request_timeout_ms", None)
        if request_timeout_ms is not None and delivery_timeout_ms < linger_ms + request_timeout_ms:
            if not delivery_given:          # Kafka's default gives way, with a warning
                delivery_timeout_ms = int(linger_ms + request_timeout_ms)
                _log.warning("delivery_timeout_ms raised to linger_ms + request_timeout_ms = %d",
                             delivery_timeout_ms)
            else:
                raise InvalidConfigError(
                    f"delivery_timeout_ms={delivery_timeout_ms} must be at least linger_ms + request_timeout_ms "
                    f"({linger_ms} + {request_timeout_ms:.0f}): a batch could expire before its request timed out")
        self.request_timeout_ms = request_timeout_ms
        if compression_type is None:
            compression_type = "none"
        if compression_type not in ("none", "gzip", "snappy", "lz4", "zstd"):
            raise InvalidConfigError(
                f"compression_type must be none, gzip, snappy, lz4 or zstd, got {compression_type!r}")
        if not _codecs.is_available(compression_type):
            _codecs.compress(compression_type, b"")   # raises CodecNotInstalledError naming the extra
        if transactional_id is not None and enable_idempotence is None:
            enable_idempotence = True           # a transactional producer is idempotent
        if enable_idempotence is None:
            idempotent = self.acks == -1 and retries > 0 and in_flight <= 5
        elif enable_idempotence:
            if self.acks != -1:
                raise InvalidConfigError("enable_idempotence needs acks='all'")
            if retries == 0:
                raise InvalidConfigError("enable_idempotence needs retries > 0")
            if in_flight > 5:
                raise InvalidConfigError("enable_idempotence needs max_in_flight_requests_per_connection <= 5")
            idempotent = True
        else:
            if transactional_id is not None:
                raise InvalidConfigError("a transactional producer is idempotent: enable_idempotence=False "
                                         "contradicts transactional_id")
            idempotent = False
        chosen: Any = partitioner
        if chosen is None:
            chosen = DefaultPartitioner()
        elif isinstance(chosen, str):
            chosen = partitioner_for_name(chosen)
        elif not isinstance(chosen, Partitioner) and not callable(getattr(chosen, "partition", None)):
            raise InvalidConfigError(f"partitioner must be a Partitioner or a name, not {chosen!r}")
        for name, fn in (("key_serializer", key_serializer), ("value_serializer", value_serializer)):
            if fn is not None and not callable(fn):
                raise InvalidConfigError(f"{name} must be callable, got {fn!r}")
        self.retries = retries
        self.delivery_timeout_ms = delivery_timeout_ms
        self.max_in_flight = in_flight
        self.enable_idempotence = idempotent
        self.compression_type = compression_type
        self.linger_ms = linger_ms
        self.batch_size = batch_size
        self.client_id = client_id
        self.partitioner = chosen
        self._transport = transport
        self._wake = threading.Condition(threading.Lock())
        self._done = threading.Condition(threading.Lock())
        self._waiters = 0
        self._closing = False
        self._stopped = False
        self._epoch_lock = threading.Lock()
        # Answers of requests out, appended by any thread, handled by the sender.
        self._answers: collections.deque = collections.deque()
        # The sender's state (flights, epoch bump, held and unresolved partitions) belongs
        # to whoever holds this: the sender thread for a step, or the transport's thread
        # taking a clean answer itself (_answer_here).  Never waited for by the latter.
        self._step_lock = threading.Lock()
        # (batch, base_offset, log_append_time) appended, accounted by _answer_here: the
        # sender completes them (the handles' callbacks run on the sender thread).
        self._completions: collections.deque = collections.deque()
        self._flights: dict[Any, _Flight] = {}    # _PartitionQueue -> its requests out
        self._seq = 0
        self._batch_splits = 0
        self._requests_out = 0
        self._in_produce = False
        self._bump_pending = False
        # Partitions whose first failed batch may have been appended: retried under the
        # current epoch (same sequence) until it is known, before any epoch bump.
        self._unresolved: set = set()
        self._held: set = set()      # partitions kept from sending until the new epoch
        self._bump_since = 0
        self._bump_after = 0
        if getattr(type(transport), "produce_async", None) is not None:
            self._produce_async = transport.produce_async
        else:
            self._produce_async = self._produce_sync
        self.transactional_id = transactional_id
        self._txn: TransactionManager | None = None
        # A transactional producer over the network: (topic, partition) -> its queue, held
        # (muted) while its AddPartitionsToTxn is out (None: asked when its first record
        # was queued, not held yet); the answers, for the sender when the thread that
        # brought one could not take it.  _adding is read and changed under _adding_lock.
        self._adding: dict[tuple[str, int], Any] = {}
        self._adding_lock = threading.Lock()
        self._add_answers: collections.deque = collections.deque()
        self._produce_kw: dict[str, Any] = {}
        if transactional_id is not None:
            transaction_timeout_ms = _positive_int("transaction_timeout_ms", transaction_timeout_ms, minimum=1,
                                                   maximum=_INT32_MAX)
            self._txn = TransactionManager(self, transport, transactional_id, transaction_timeout_ms)
            self._produce_kw = {"transactional_id": transactional_id}
        self._configure(batch_size=batch_size, linger_ms=linger_ms, compression=compression_type,
                        max_request_size=max_request_size, buffer_memory=buffer_memory,
                        partitioner=chosen, key_serializer=key_serializer,
                        value_serializer=value_serializer, delivery_timeout_ms=delivery_timeout_ms,
                        idempotent=idempotent, transactional=transactional_id is not None)
        if idempotent and transactional_id is None:
            # As Kafka's producer, no request here: the sender gets the producer id before
            # the first batch goes (the epoch bump's path, which holds the batches until
            # then and retries a retriable failure while their delivery timeout allows).
            self._bump_pending = True
            self._bump_since = self._now()
        self._next_metadata = self._now() + self.metadata_max_age_ms
        # Over the network the I/O thread sends (_io_step); the sender thread is asked
        # for the rest (_sender_wanted).  None: the sender thread does every step.
        self._sender_wanted = False
        self._io = None
        add_io_task = getattr(transport, "add_io_task", None)
        if add_io_task is not None and self._produce_async != self._produce_sync:
            # (Never with a produce that waits: the I/O thread would wait on itself.)
            try:
                self._io = add_io_task(self._io_step, self._io_closed)
                self._io.wake()     # its first step tells the core whether it sleeps
            except PylogError:
                pass            # the transport is closed: the sender thread fails what comes
        self._thread = threading.Thread(target=self._run, name=f"pylog-producer-{client_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ hooks of the core

    @staticmethod
    def _now() -> int:
        return time.time_ns() // 1_000_000

    #: Called with the producer once it is closed (the Client that made it forgets it).
    _on_close: Callable[[Any], object] | None = None

    def _topic_metadata(self, topic: str, wait: bool = True) -> tuple[int, int]:
        # A send (the core's call) waits up to max_block_ms for a topic the cluster does
        # not know yet; the sender's own refreshes (wait=False) never do.
        return self._transport.topic_metadata(topic, wait_ms=self.max_block_ms if wait else 0)

    def _check_send(self) -> None:
        # The core asks this while a transactional producer refuses records (outside a
        # transaction, see TransactionManager.state): it raises why.
        assert self._txn is not None
        self._txn.check_send()

    def _wake_sender(self) -> None:
        # Records to send: the I/O thread sends them over the network, else the sender.
        io = self._io
        if io is not None:
            io.wake()
            return
        with self._wake:
            self._wake.notify()

    def _notify_sender(self) -> None:
        """Wake the sender thread (answers, completions, or work only it may do)."""
        with self._wake:
            self._wake.notify()

    def _want_sender(self) -> None:
        """Ask the sender thread for a whole step (the I/O thread may not do it)."""
        self._sender_wanted = True
        self._notify_sender()

    def _expedite(self, batch) -> None:
        self._close_batch(batch)
        self._wake_sender()

    def _wait_for_memory(self, nbytes: int) -> None:
        if not self._wait_room(nbytes, self.max_block_ms / 1000):
            raise self._buffer_full_error()

    def _wait_for_memory_streaming(self, nbytes: int) -> bool:
        """send_batch of more than buffer_memory, part of it queued: wait up to max_block_ms
        for room (False: none came; the call queues the rest beyond buffer_memory rather
        than raise with part of it queued)."""
        if self._wait_room(nbytes, self.max_block_ms / 1000):
            return True
        _log.warning("send_batch: buffer_memory=%d stayed full for max_block_ms=%d with part of the call "
                     "queued: queuing the rest beyond it", self._buffer_memory, self.max_block_ms)
        return False

    def _wait_room(self, nbytes: int, timeout: float) -> bool:
        """Wait until ``nbytes`` more fit buffer_memory (True) or ``timeout`` s passed (False)."""
        self._check_not_sender("wait for buffer memory")
        deadline = time.monotonic() + timeout
        self._close_for_flush()
        self._wake_sender()
        with self._done:
            self._waiters += 1
            try:
                while self.buffered_bytes > 0 and self.buffered_bytes + nbytes > self._buffer_memory:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._done.wait(remaining)
            finally:
                self._waiters -= 1
        return True

    def _buffer_full_error(self) -> RequestTimedOutError:
        return RequestTimedOutError(f"buffer_memory={self._buffer_memory} stayed full for max_block_ms="
                                    f"{self.max_block_ms}: the producer cannot keep up")

    def _wait_batch(self, batch, timeout: float | None) -> None:
        if batch.state == _PENDING:
            return
        self._check_not_sender("wait for a send's result")
        self._expedite(batch)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            self._waiters += 1
            try:
                while batch.state != _PENDING:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise RequestTimedOutError(f"the send did not complete within {timeout} s")
                    self._done.wait(remaining)
            finally:
                self._waiters -= 1

    def _check_not_sender(self, what: str) -> None:
        if threading.current_thread() is self._thread:
            raise IllegalStateError(f"cannot {what} inside a producer callback (it runs on the sender thread)")

    def _notify_done(self) -> None:
        if self._waiters:
            with self._done:
                self._done.notify_all()

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        idle_since = None
        while True:
            with self._wake:
                while True:
                    if self._stopped:
                        return
                    if self._answers or self._completions or self._add_answers or self._sender_wanted:
                        break
                    now = self._now()
                    # Over the network the I/O thread times the lingers and backoffs (its
                    # step), the sender only the epoch bump and the metadata refresh.
                    io = self._io is not None
                    delay = -1 if io else self._next_delay(now)
                    if self._bump_pending and not self._requests_out and not self._unresolved:
                        until_bump = max(self._bump_after - now, 0)      # the new epoch can be had
                        delay = until_bump if delay < 0 else min(delay, until_bump)
                    if delay == 0:
                        break
                    if delay < 0 and self._closing and not self._incomplete_count():
                        self._stopped = True
                        self._notify_done()
                        return
                    timeout = None if delay < 0 else min(delay / 1000, _MAX_WAIT_S)
                    if io and delay < 0 and self._incomplete_count():
                        idle_since = None           # records out or queued: not idle
                    elif delay < 0 and self._pooled_bytes() > _POOL_IDLE_BYTES:
                        # Idle with many batch buffers kept for reuse (after bulk sends):
                        # give them back once idle for a while.
                        if idle_since is None:
                            idle_since = now
                        if now - idle_since >= _POOL_IDLE_MS:
                            self._trim_pool(_POOL_IDLE_BYTES)
                        else:
                            timeout = _POOL_IDLE_MS / 1000
                    elif delay >= 0:
                        idle_since = None
                    if self._next_metadata is not None:
                        until_md = max((self._next_metadata - self._now()) / 1000, 0.001)
                        timeout = until_md if timeout is None else min(timeout, until_md)
                    self._wake.wait(timeout)
                    if self._now() >= self._next_metadata:
                        break
            try:
                self._sender_step()
            except BaseException:  # noqa: BLE001 - the sender must survive anything
                _log.exception("producer sender step failed")
            self._notify_done()

    def _sender_step(self) -> None:
        """Handle the answers that came, then send what is ready (one step of the sender).
        Over the network: complete what the I/O thread took (the callbacks run here,
        outside the sender's state, so the I/O thread keeps sending meanwhile), then a
        whole step only if something needs the sender thread."""
        io = self._io
        if io is not None:
            completions = self._completions
            while completions:
                b, base_offset, log_append_time = completions.popleft()
                b.complete(base_offset, log_append_time)
            if not self._sender_due():
                return
        with self._step_lock:
            self._sender_step_locked()
        if io is not None:
            io.wake()       # the I/O thread times what is queued from now on

    def _sender_due(self) -> bool:
        """Over the network: whether something needs a whole step of the sender thread."""
        now = self._now()
        return bool(self._answers or self._add_answers or self._sender_wanted or now >= self._next_metadata
                    or (self._bump_pending and not self._requests_out and not self._unresolved
                        and now >= self._bump_after))

    def _io_step(self) -> float | None:
        """The sender's step on the network client's I/O thread (woken by a record
        appended, an answer that freed a slot, an AddPartitionsToTxn answer, or its
        timer): send what may go, as :meth:`_answer_here` does, and return the seconds
        until the next linger or backoff ends (None: nothing waits).  Hands the whole
        step to the sender thread when it holds the sender's state or answers wait for
        it, and asks it for what the I/O thread may not do (fail batches past their
        delivery timeout, abort a transaction's unsent records)."""
        if self._stopped:
            return None
        if self._answers or not self._step_lock.acquire(blocking=False):
            self._want_sender()
            return None
        try:
            now = self._now()
            if self._add_answers:
                self._take_add_answers(now)
            self._send_ready(now, here=True)
            delay = self._next_delay(now)
        finally:
            self._step_lock.release()
        txn = self._txn
        if self._answers or self._sender_wanted or (delay >= 0 and txn is not None and not txn.may_send()):
            self._want_sender()
            return None     # (the sender wakes this step again after its own)
        return None if delay < 0 else delay / 1000

    def _io_closed(self) -> None:
        """The network client stopped (its I/O thread): the sender thread does every step
        from now on (and fails what it cannot send)."""
        self._io = None
        self._want_sender()

    def _sender_step_locked(self) -> None:
        self._sender_wanted = False
        completions = self._completions
        while completions:
            # Taken by the transport's thread before any answer now waiting came.
            b, base_offset, log_append_time = completions.popleft()
            b.complete(base_offset, log_append_time)
        answers = self._answers
        while answers:
            self._answered(*answers.popleft())
        now = self._now()
        if self._add_answers:
            self._take_add_answers(now)
        if now >= self._next_metadata:
            self._refresh_metadata()
            self._next_metadata = now + self.metadata_max_age_ms
        if self._bump_pending and not self._requests_out and not self._unresolved and now >= self._bump_after:
            self._bump(now)
        self._send_ready(now)

    def _bump(self, now: int) -> None:
        """Every request is answered and no partition waits to learn whether a batch was
        appended: a new epoch, and the held partitions may send (renumbered)."""
        try:
            self._bump_epoch()
        except PylogError as exc:
            if exc.retriable and now - self._bump_since < self.delivery_timeout_ms:
                _log.warning("producer %d: no new epoch (%s); retrying in %d ms", self.producer_id, exc,
                             self.retry_backoff_max_ms)
                self._bump_after = now + self.retry_backoff_max_ms
                return
            # What waits for the new epoch cannot be sent under the old one.
            _log.error("producer %d: no new epoch (%s): failing what is pending", self.producer_id, exc)
            self._abort_all(exc)
            if self.producer_id < 0:
                # Never had a producer id: later records wait for the next try.
                self._bump_since = now
                self._bump_after = now + self.retry_backoff_max_ms
                return
        self._bump_pending = False
        for queue in self._held:
            if queue.blocked_until == _MUTED:
                queue.blocked_until = 0
        self._held.clear()

    def _send_ready(self, now: int, *, here: bool = False) -> None:
        """Drain the partitions that may send (none outstanding, or room for more of an
        idempotent partition's batches) and hand their batches to the transport.
        ``here``: called on the transport's thread (:meth:`_io_step`, :meth:`_answer_here`),
        which fails nothing: a partition with a batch past its delivery timeout is left to
        the sender (asked for with ``_sender_wanted``)."""
        txn = self._txn
        if txn is not None and not txn.may_send():
            if not here:      # (the transport's thread fails nothing: the sender does)
                self._abort_undrained(txn.undrained_error())
            return
        work = self._drain(now, self._closing, max(self._max_request_bytes(), 1), self.max_in_flight)
        if txn is not None:
            work = self._add_to_transaction(work, now, here)
        sending: list[_Request] = []
        for topic, partition, batches in work:
            if here:
                if any(now >= b.deadline_ms for b in batches):
                    self._requeue(topic, partition, batches, 0)
                    self._sender_wanted = True      # the sender fails them
                    continue
            else:
                batches = self._expire(topic, partition, batches)
                if not batches:
                    continue
            queue = batches[0].queue
            if self._bump_pending:
                # Until the new epoch, only what must be settled under the current one goes:
                # a partition's batches already numbered, once its first failure left open
                # whether it was appended.  The rest waits, renumbered after the bump.
                keep = 0
                if queue in self._unresolved:
                    while keep < len(batches) and batches[keep].base_sequence >= 0:
                        keep += 1
                if keep < len(batches):
                    self._requeue(topic, partition, batches[keep:], _MUTED)
                    self._held.add(queue)
                    del batches[keep:]
                    if not batches:
                        continue
            flight = self._flights.get(queue)
            if flight is None:
                flight = self._flights[queue] = _Flight()
            room = self._room(flight)
            if len(batches) > room:
                # More than may be outstanding: the rest waits, first in its queue.
                self._requeue(topic, partition, batches[max(room, 0):], _MUTED)
                del batches[max(room, 0):]
                if not batches:
                    continue
            # One request per batch, answered on its own: an answer frees its slot at
            # once instead of when the partition's whole drain is answered.
            for b in batches:
                self._seq += 1
                sending.append(_Request(queue, [b], self._seq))
            flight.requests += len(batches)
            flight.batches += len(batches)
            self._requests_out += len(batches)
            queue.blocked_until = _MUTED if self._room(flight) <= 0 else 0
        if not sending:
            return
        work = [(r.queue.topic, r.queue.partition, self._prepare(r.batches)) for r in sending]
        answers = self._answers
        kw = self._produce_kw
        if self.request_timeout_ms is not None:
            # A request on the wire is bounded by its batches' delivery timeout too (Kafka's
            # Sender expires in-flight batches): it times out then, and the batch fails as
            # one past its delivery timeout whose fate is unknown.
            timeout = self.request_timeout_ms
            kw = dict(kw, timeout_ms=[max(1, int(min(timeout, min(b.deadline_ms for b in r.batches) - now)))
                                      for r in sending])

        def on_done(i: int, results: list, _sending: list = sending) -> None:
            # Any thread (the network transport's I/O thread): taken there if it is clean,
            # else the sender handles it.
            if self._answer_here(_sending[i], results):
                return
            answers.append((_sending[i], results))
            if not self._in_produce:
                # (During the call the caller looks at the answers after it.)
                self._notify_sender()

        self._in_produce = True
        try:
            self._produce_async(work, acks=self.acks, on_done=on_done, **kw)
        except PylogError as exc:   # the transport is closed: nothing was sent
            for r in sending:
                answers.append((r, [ProduceResult.failed(exc) for _ in r.batches]))
        finally:
            self._in_produce = False

    def _add_to_transaction(self, work: list, now: int, here: bool) -> list:
        """The drained partitions that may go now: those of the transaction.  The new
        ones wait: over the network their AddPartitionsToTxn is sent without waiting and
        the thread that brings the answer sends them (:meth:`_partitions_added`); over
        the embedded transport the sender adds them at once (on the transport's thread
        they go back to wait for the sender).  A partition refused retriably waits a
        backoff; a fatal or abortable refusal stops the sending."""
        txn = self._txn
        assert txn is not None
        new = [(t, p) for t, p, _ in work if not txn.added(t, p)]
        if not new:
            return work
        if txn.adds_async:
            keep, ask = [], []
            for t, p, batches in work:
                if txn.added(t, p):
                    keep.append((t, p, batches))
                    continue
                self._requeue(t, p, batches, _MUTED)
                with self._adding_lock:
                    if self._adding.get((t, p)) is None:
                        if (t, p) not in self._adding:
                            ask.append((t, p))
                        self._adding[(t, p)] = batches[0].queue     # released by the answer
            if ask:
                txn.add_partitions_async(ask, self._partitions_added)
            return keep
        if not here:
            txn.add_partitions(new)
            if not txn.may_send():
                for t, p, batches in work:
                    self._requeue(t, p, batches, 0)
                self._abort_undrained(txn.undrained_error())
                return []
        keep = []
        for t, p, batches in work:
            if txn.added(t, p):
                keep.append((t, p, batches))
            else:
                self._requeue(t, p, batches, 0 if here else now + self.retry_backoff_ms)
        return keep

    def _txn_partitions_queued(self) -> None:
        """The core opened the first batch of partitions in this transaction (the
        application's thread, in send or send_batch): over the network, ask the
        coordinator to add them now, as Kafka's producer does, so that the answer is
        usually there when their batches are ready.  (The sender adds whatever this
        misses when it drains.)"""
        new = self._take_txn_partitions()
        txn = self._txn
        if txn is None or not txn.adds_async or not txn.may_send():
            return
        ask = []
        with self._adding_lock:
            for tp in new:
                if not txn.added(*tp) and tp not in self._adding:
                    self._adding[tp] = None
                    ask.append(tp)
        if ask:
            txn.add_partitions_async(ask, self._partitions_added)

    def _partitions_added(self, codes: dict) -> None:
        """The answer of an AddPartitionsToTxn (the network I/O thread, after the
        transaction manager took it): release the partitions' batches and send them
        here when the sender's state is free and nothing waits for the sender, else
        hand the answer to the sender."""
        self._add_answers.append(codes)
        io = self._io
        if io is not None:
            io.wake()               # (this thread's step takes it next)
            return
        txn = self._txn
        assert txn is not None
        if any(codes.values()) or not txn.may_send() or self._answers or self._bump_pending:
            self._notify_sender()   # a backoff to time, batches to fail, or answers first
            return
        if not self._step_lock.acquire(blocking=False):
            self._notify_sender()
            return
        try:
            now = self._now()
            self._take_add_answers(now)
            if not self._answers and not self._bump_pending:
                self._send_ready(now, here=True)
        finally:
            self._step_lock.release()
        if self._add_answers or self._answers:
            self._notify_sender()   # (came while this thread held the sender's state)

    def _take_add_answers(self, now: int) -> None:
        """Release the partitions whose AddPartitionsToTxn was answered (step lock held):
        added ones may send, retriably refused ones after a backoff (short for
        CONCURRENT_TRANSACTIONS, the previous transaction still completing, as Kafka's
        producer), the others are failed by the sender (the transaction cannot go on)."""
        answers = self._add_answers
        while answers:
            for tp, code in answers.popleft().items():
                with self._adding_lock:
                    queue = self._adding.pop(tp, None)
                if queue is None:
                    continue        # (asked early, answered before the sender held it)
                if not code or not error_for_code(code).retriable:
                    queue.blocked_until = 0
                else:
                    backoff = min(self.retry_backoff_ms, _CONCURRENT_BACKOFF_MS) \
                        if code == _CONCURRENT_TRANSACTIONS else self.retry_backoff_ms
                    queue.blocked_until = now + backoff

    def _answer_here(self, request: _Request, results: list) -> bool:
        """An answer on the transport's thread (the network I/O thread): when every batch
        of it was appended, no other answer waits for the sender and no epoch bump is
        pending, account for it and send what its freed slot lets go, here, without a
        hand-over to the sender thread and back (the sender completes the batches: the
        handles' callbacks run there).  Returns False, having done nothing, when the
        sender must handle it (an error, an answer waiting before it, a failed batch of the
        partition waiting for the others' answers, the sender busy).  Over the network
        the sending is left to :meth:`_io_step`, which this thread runs next."""
        for res in results:
            if res.error_code and res.error_code != _DUPLICATE_SEQUENCE:
                return False
        if self._answers or self._bump_pending or not self._step_lock.acquire(blocking=False):
            return False
        try:
            if self._answers or self._bump_pending or self._flights[request.queue].failed:
                return False      # (a failed batch of the partition waits for this answer)
            queue = request.queue
            muted = queue.blocked_until == _MUTED
            self._answered(request, results, self._completions)
            io = self._io
            if io is None:
                self._send_ready(self._now(), here=True)
        finally:
            self._step_lock.release()
        if io is not None and muted and queue.blocked_until != _MUTED:
            # The freed slot lets the partition send: this thread's step, next.  (Nothing
            # else changed for the step: a partition not muted has its wake or timer.)
            io.wake()
        self._notify_sender()     # (the completions)
        return True

    def _room(self, flight: _Flight) -> int:
        """How many more batches of a partition may be outstanding now."""
        if flight.failed:
            return 0          # waiting for the partition's other answers before retrying
        if self.enable_idempotence and flight.acked_epoch != self.producer_epoch:
            # The epoch's first batch goes alone: a broker that does not know the producer
            # yet would take a later sequence first (and a later batch appended would
            # wrongly say the first was).
            return 0 if flight.requests else 1
        if flight.retrying:
            # Retried batches go alone and are answered before later ones are appended:
            # one appended already must stay among the 5 the broker recognises.
            return 0 if flight.requests else flight.retrying
        if not flight.requests:
            return self.max_in_flight
        if not self.enable_idempotence or flight.requests >= self.max_in_flight:
            # Without sequence numbers nothing more goes until the partition's requests
            # out are answered (those may still be up to max_in_flight, sent together: a
            # retry of one of them can land after the others, as in Kafka).
            return 0
        # The broker recognises a retried duplicate among a producer's last 5 batches.
        return self.max_in_flight - flight.batches

    def _max_request_bytes(self) -> int:
        # Up to max_in_flight batches (and about their bytes) per append of one partition;
        # send_batch's own batches (up to bulk_batch_bytes) count as whole batches too, so
        # several of them go in one append instead of one per sender step.
        return self.max_in_flight * max(self.batch_size, 16384, self._bulk_batch_bytes())

    def _refresh_metadata(self) -> None:
        for topic in self._topics_known():
            try:
                n, max_bytes = self._topic_metadata(topic, wait=False)
                self._update_topic(topic, n, max_bytes)
            except UnknownTopicOrPartitionError:
                self._forget_topic(topic)

    def _expire(self, topic: str, partition: int, pending: list) -> list:
        """Fail the batches past their delivery timeout; returns those still to send.
        Order is kept: the first expired batch fails, and so does what follows it (it was
        queued behind and is older than its own deadline allows)."""
        now = self._now()
        for first, b in enumerate(pending):
            if now >= b.deadline_ms:
                err = RequestTimedOutError(f"{topic}-{partition}: not appended within delivery_timeout_ms")
                if self.enable_idempotence and b.attempts:
                    # Sent before, and maybe appended: its sequence cannot be given to
                    # another batch.  A new epoch starts the numbering afresh.
                    self._unresolved.discard(b.queue)
                    self._request_bump(err)
                else:
                    self._rewind(pending[first:])
                for late in pending[first:]:
                    late.fail(err)
                if self._txn is not None:
                    self._txn.batch_failed(err)
                return pending[:first]
        return pending

    def _answered(self, request: _Request, results: list, completions: Any = None) -> None:
        """One partition's answer: complete what was appended (or, given ``completions``,
        append it there for the sender to complete); once the partition has no request
        out, retry or fail what was not (:meth:`_recover`)."""
        queue = request.queue
        flight = self._flights[queue]
        flight.requests -= 1
        flight.batches -= len(request.batches)
        self._requests_out -= 1
        for k, (b, res) in enumerate(zip(request.batches, results)):
            if res.error_code == 0 or res.error_code == _DUPLICATE_SEQUENCE:
                # (DUPLICATE_SEQUENCE_NUMBER: appended before, the broker no longer knows where.)
                base_offset = res.base_offset if self.acks != 0 and res.error_code == 0 else -1
                if completions is None:
                    b.complete(base_offset, res.log_append_time)
                else:
                    completions.append((b, base_offset, res.log_append_time))
                flight.acked_epoch = self.producer_epoch
                flight.last_acked = max(flight.last_acked, (request.seq, k))
                flight.acks.append((request.seq, k))
            else:
                flight.failed.append(((request.seq, k), b, res.error))
        if flight.failed:
            if flight.requests:
                queue.blocked_until = _MUTED
            else:
                self._recover(queue, flight)
            return
        if flight.retrying:
            flight.retrying = max(flight.retrying - len(request.batches), 0)
        if not flight.retrying:
            # Its batches before these are appended too.  (Not while retried batches are
            # out: each is its own request, and one appended says nothing of the later
            # ones, which may be the batches whose first send is unresolved.)
            self._unresolved.discard(queue)
        if queue.blocked_until == _MUTED and self._room(flight) > 0 and queue not in self._held:
            queue.blocked_until = 0

    def _recover(self, queue: Any, flight: _Flight) -> None:
        """Every request of the partition is answered and some batches failed: retry them
        (in order, with backoff), renumber them under a new epoch, or fail them."""
        topic, partition = queue.topic, queue.partition
        failed = sorted(flight.failed, key=lambda f: f[0])
        flight.failed = []
        batches = [b for _, b, _ in failed]
        if not self.enable_idempotence:
            # Each batch stood on its own (the partition had one request out).
            retry = []
            split_only = True
            gone = None
            for _, b, exc in failed:
                parts = self._split_refused(b, exc)
                if parts:
                    retry.extend(parts)
                    continue
                split_only = False
                if exc.retriable and b.attempts < self.retries:
                    if gone is None:
                        gone = self._topic_gone(topic, partition)
                    if not gone:
                        retry.append(b)
                        continue
                self._fail(topic, b, exc)
            if retry and split_only:
                self._requeue(topic, partition, retry, 0)     # the parts of split batches: now
            else:
                self._retry(queue, retry, failed[0][2])
            return
        failed = self._appended_long_ago(flight, failed)
        if not failed:
            flight.retrying = 0
            queue.blocked_until = 0
            return
        flight.retrying = len(failed)
        position, first, exc = failed[0]
        parts = self._split_refused(first, exc)
        if parts:
            # Its parts take its place and its sequence range; the later batches (refused
            # as out of order behind it) keep theirs and go again after them, in order.
            rest = batches[1:]
            flight.retrying = len(parts) + len(rest)
            if any(e.error_code in _AMBIGUOUS or p < flight.last_acked for p, _, e in failed[1:]):
                self._unresolved.add(queue)
            self._requeue(topic, partition, parts + rest, 0)
            return
        if first.attempts < self.retries:
            if isinstance(exc, (OutOfOrderSequenceError, UnknownProducerIdError)):
                self._unresolved.discard(queue)
                # The first batch not appended, refused for its numbering: the broker lost
                # track of us (KIP-360).  New epoch, then renumber.  (Later batches failing
                # alike were refused because of this one.)
                for b in batches:
                    b.attempts += 1
                self._request_bump(exc)
                self._requeue(topic, partition, batches, 0)
                return
            if exc.retriable and not self._topic_gone(topic, partition):
                # Every failed batch keeps its sequence: one appended after all is answered
                # as a duplicate; those refused for the gap it left go in order after it.
                # One that may be, or is known to be, appended keeps the old epoch's
                # number until the broker answers it: no epoch bump meanwhile.  (A
                # partition stays unresolved until a batch of it is appended: a refusal of
                # the retry, say by a new leader, says nothing of the first send.)
                if any(e.error_code in _AMBIGUOUS or p < flight.last_acked for p, _, e in failed):
                    self._unresolved.add(queue)
                self._retry(queue, batches, exc)
                return
        # Fails for good: this batch only; the later ones were refused because of it.
        if queue in self._unresolved:
            self._unresolved.discard(queue)
            self._request_bump(exc)    # its sequence may be taken
        self._fail(topic, first, exc)
        rest = batches[1:]
        flight.retrying = len(rest)
        if flight.last_acked > position:
            # A later batch was appended: the broker has moved past this one's numbers
            # (it took them, or it did not know this producer yet), so they stay used.
            pass
        elif exc.error_code in _AMBIGUOUS:
            # Retries (or the topic) ran out on an error that says nothing of whether it
            # was appended: its sequence may be taken.  A new epoch numbers afresh.
            self._request_bump(exc)
        else:
            self._rewind(batches)
        if rest:
            self._requeue(topic, partition, rest, 0)
        else:
            queue.blocked_until = 0

    @staticmethod
    def _appended_long_ago(flight: _Flight, failed: list) -> list:
        """Complete the failed batches known to be appended (a later batch of the epoch
        was) that the broker no longer recognises as duplicates (5 or more appended
        after them): offset unknown, as Kafka's producer does on DUPLICATE_SEQUENCE_NUMBER.
        Returns the failed batches still to retry."""
        out = []
        for position, b, exc in failed:
            if position < flight.last_acked:
                later = sum(1 for a in flight.acks if a > position)
                later += sum(1 for p, _, e in failed if p > position and e.error_code in _AMBIGUOUS)
                if later >= 5 or isinstance(exc, OutOfOrderSequenceError):
                    b.complete(-1, -1)
                    continue
            out.append((position, b, exc))
        return out

    def _split_refused(self, batch: Any, exc: PylogError) -> list | None:
        """A batch of several records refused as MESSAGE_TOO_LARGE (the topic's
        max.message.bytes is lower than the producer knew): split it, as Kafka's producer
        does, into batches of at most ``batch_size`` and of the topic's limit, re-read
        now (else of half its size, so that splitting again always ends); a record still
        too large then fails alone.  Returns the parts, or None if it is not split."""
        if exc.error_code != _MESSAGE_TOO_LARGE or batch.record_count < 2 or batch.data is None:
            return None
        if self._txn is not None and not self._txn.may_send():
            return None     # (the transaction is failing: the batch fails with it)
        topic = batch.topic
        limit = self.batch_size
        try:
            count, max_bytes = self._topic_metadata(topic, wait=False)
            self._update_topic(topic, count, max_bytes)
            limit = min(limit, max_bytes)
        except PylogError:
            pass
        size = len(batch.data)
        if limit >= size:
            limit = max(size // 2, 1)
        parts = self._split(batch, limit)
        if not parts:
            return None
        self._batch_splits += 1
        _log.warning("%s-%d: a batch of %d records (%d bytes) was refused as too large (%s); split into %d "
                     "batches of at most %d bytes", topic, batch.partition, batch.record_count, size, exc,
                     len(parts), limit)
        return parts

    @property
    def batch_split_count(self) -> int:
        """Batches split after the broker refused them as MESSAGE_TOO_LARGE (Kafka's
        ``batch-split-total``)."""
        return self._batch_splits

    def _retry(self, queue: Any, batches: list, exc: PylogError) -> None:
        """Put ``batches`` back first in their queue, after a backoff."""
        if not batches:
            queue.blocked_until = 0
            return
        for b in batches:
            b.attempts += 1
        attempts = batches[0].attempts
        backoff = min(self.retry_backoff_ms * (2 ** max(attempts - 1, 0)), self.retry_backoff_max_ms)
        backoff = int(backoff * random.uniform(0.8, 1.2))
        _log.info("%s-%d: retrying %d batches in %d ms after %s", queue.topic, queue.partition, len(batches),
                  backoff, exc)
        self._requeue(queue.topic, queue.partition, batches, self._now() + backoff)

    def _fail(self, topic: str, batch: Any, exc: PylogError) -> None:
        if isinstance(exc, UnknownTopicOrPartitionError):
            self._forget_topic(topic)
        batch.fail(exc)
        if self._txn is not None:
            self._txn.batch_failed(exc)

    def _request_bump(self, exc: PylogError) -> None:
        """A new epoch is needed: nothing more is sent until every request out is
        answered, then the sender bumps the epoch and what is pending is renumbered.  A
        transactional producer cannot bump its epoch inside a transaction: the error
        makes the transaction abortable instead (its abort bumps the epoch)."""
        if self._txn is not None:
            self._txn.batch_failed(exc)
            return
        if not self._bump_pending:
            self._bump_pending = True
            self._bump_since = self._now()

    def _produce_sync(self, work: list, *, acks: int, on_done: Callable[[int, list], object],
                      **kw: Any) -> None:
        """produce_async over a transport that has only ``produce`` (one call at a time)."""
        try:
            results = self._transport.produce(work, acks=acks, **kw)
        except PylogError as exc:
            results = [[ProduceResult.failed(exc) for _ in batches] for _, _, batches in work]
        for i, res in enumerate(results):
            on_done(i, res)

    def _topic_gone(self, topic: str, partition: int) -> bool:
        try:
            return partition >= self._transport.topic_metadata(topic)[0]
        except UnknownTopicOrPartitionError:
            return True
        except PylogError:
            return False

    def _bump_epoch(self) -> None:
        with self._epoch_lock:
            first = self.producer_id < 0
            if first:
                res = self._transport.init_producer_id()
            else:
                res = self._transport.init_producer_id(producer_id=self.producer_id,
                                                       producer_epoch=self.producer_epoch)
                if res.error_code:
                    res = self._transport.init_producer_id()
            res.raise_for_error()
            _log.log(logging.DEBUG if first else logging.WARNING, "producer %d: new epoch %d (was %d, %d)",
                     res.producer_id, res.producer_epoch, self.producer_id, self.producer_epoch)
            self._set_producer_id(res.producer_id, res.producer_epoch)

    # ------------------------------------------------------------------ public API

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until it is appended (or failed).

        Raises
        ------
        RequestTimedOutError
            ``timeout`` seconds passed first.
        """
        self._check_not_sender("flush")
        pending = self._close_for_flush()
        self._wake_sender()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            self._waiters += 1
            try:
                for b in pending:
                    while b.state != _PENDING:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise RequestTimedOutError(f"flush did not complete within {timeout} s")
                        self._done.wait(remaining)
            finally:
                self._waiters -= 1

    def partitions_for(self, topic: str) -> list[int]:
        """Partition ids of ``topic``.  Raises UnknownTopicOrPartitionError."""
        return list(range(self._transport.topic_metadata(topic)[0]))

    # ------------------------------------------------------------------ transactions

    def _transactions(self) -> TransactionManager:
        if self._txn is None:
            raise IllegalStateError("transactions need a producer made with transactional_id=...")
        self._check_not_sender("run a transaction call")
        return self._txn

    def init_transactions(self) -> None:
        """Register the transactional id with its transaction coordinator (once, before
        the first transaction): a producer id and a new epoch, which fences every older
        producer of the same transactional id and aborts its open transaction.

        Raises
        ------
        ProducerFencedError
            A newer producer holds the transactional id.
        IllegalStateError
            Not transactional, or called twice.
        """
        self._transactions().init_transactions()

    def begin_transaction(self) -> None:
        """Start a transaction: the records sent until :meth:`commit_transaction` or
        :meth:`abort_transaction` are appended all or none, as seen by read_committed
        consumers.  Raises IllegalStateError outside the READY state."""
        self._transactions().begin_transaction()

    def send_offsets_to_transaction(self, offsets: Mapping[Any, Any], group_metadata: Any) -> None:
        """Commit a consumer group's offsets as part of the transaction (they count only
        if it commits): ``offsets`` maps TopicPartition (or ``(topic, partition)``) to
        OffsetAndMetadata or an int, the next offset to consume; ``group_metadata`` is the
        consumer's :meth:`~pylog.client.consumer.Consumer.group_metadata` (so a member
        fenced by a rebalance cannot commit, KIP-447) or a group id.

        Raises
        ------
        ProducerFencedError
            Fatal: a newer producer holds the transactional id.
        CommitFailedError, IllegalGenerationError, UnknownMemberIdError, FencedInstanceIdError
            The group refused the member: abort the transaction.
        """
        self._transactions().send_offsets_to_transaction(offsets, group_metadata)

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Flush the transaction's records, then commit it (EndTxn).

        Raises
        ------
        PylogError
            The error that made the transaction abortable (a record that failed for good,
            a partition that could not be added): call :meth:`abort_transaction`.
        ProducerFencedError
            Fatal: close the producer.
        RequestTimedOutError
            The flush did not end within ``timeout`` seconds (commit again, or abort).
        """
        self._transactions().commit_transaction(timeout)

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction: records not sent yet fail with TransactionAbortedError,
        the requests out are waited for, then EndTxn(abort) and a new producer epoch.
        Read_committed consumers never see the transaction's records.  Raises
        ProducerFencedError (fatal) and IllegalStateError outside a transaction."""
        self._transactions().abort_transaction(timeout)

    @property
    def transaction_state(self) -> str | None:
        """Kafka's name of the transactional state (None: not transactional)."""
        return None if self._txn is None else self._txn.state

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (waiting up to ``timeout`` seconds; None: until done), then
        stop.  Sends still pending after the timeout fail with RequestTimedOutError.
        Idempotent."""
        if self._closing:
            self._thread.join(timeout)
            return
        self._check_not_sender("close the producer")
        txn = self._txn
        if txn is not None and txn.state in (IN_TRANSACTION, ABORTABLE_ERROR, ABORTING):
            # As Kafka's producer: an open transaction is aborted, not left to time out.
            try:
                txn.abort_transaction(timeout)
            except PylogError as exc:
                _log.warning("transactional id %r: abort on close failed: %s", txn.transactional_id, exc)
        self._mark_closed()
        self._closing = True
        try:
            self.flush(timeout)
        except RequestTimedOutError:
            self._abort_all(RequestTimedOutError("the producer was closed before the record was appended"))
        finally:
            with self._wake:
                self._stopped = True
                self._wake.notify()
            self._thread.join()
            io, self._io = self._io, None
            if io is not None:
                io.cancel()
            self._notify_done()
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close(self)

    @property
    def closed(self) -> bool:
        return self._closing

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Producer {self.client_id} acks={self.acks} idempotent={self.enable_idempotence}"
                f"{' closed' if self._closing else ''}>")
