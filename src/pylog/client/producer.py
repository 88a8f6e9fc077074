"""The producer: Kafka's producer semantics over a :class:`~pylog.client.transport.Transport`.

Records are batched per partition exactly as Kafka's producer batches them (``batch_size``,
``linger_ms``, one codec per batch) into real v2 batches, numbered per partition for the
idempotent producer, and sent by a sender thread: each round drains the ready batches of
every partition and hands them to :meth:`Transport.produce <pylog.client.transport.Transport.produce>`
in one call (the embedded transport appends them through
:meth:`pylog.broker.core.Broker.produce_batches`, the code path the wire-protocol server's
Produce uses; a network transport sends one Produce request per leader).

Delivery
--------
- ``acks``: 0 (handles resolve with offset -1), 1 or ``"all"`` (-1).  On one node 1 and all
  both mean "appended to the partition log"; ``"all"`` also enforces the topic's
  ``min.insync.replicas``.
- Retriable errors are retried with exponential backoff (``retry_backoff_ms`` doubling up to
  ``retry_backoff_max_ms``, 20 % jitter) until ``retries`` or ``delivery_timeout_ms`` run
  out.  A partition whose batch waits for a retry sends nothing else meanwhile, so the
  order of a partition's records is their send order whatever is retried.
- Idempotence (the default, as in Kafka 3+): the producer gets a producer id from the
  broker; each batch carries the partition's next sequence number; a retried batch keeps
  its number, so if it was appended after all the broker answers with the original
  offsets instead of appending it twice.  A batch that fails for good rewinds its
  partition's numbering so later batches are not rejected for a gap; an
  OUT_OF_ORDER_SEQUENCE / UNKNOWN_PRODUCER_ID from the broker bumps the producer epoch
  (KIP-360) and renumbers what is pending.
- ``max_in_flight_requests_per_connection`` (alias ``max_in_flight``) is validated as Kafka
  does (at most 5 with idempotence).  The embedded transport is a function call, so a
  partition never has more than one append outstanding; the setting bounds how many ready
  batches of one partition go into one append, which is what keeps a retried append
  within the 5 batches per producer the broker remembers for duplicate detection.
  A partition has at most one produce outstanding: the sender waits for a round's
  results before it drains the partition again.

Threads
-------
``send``, ``send_batch``, ``flush`` and ``close`` may be called from any thread.  One sender
thread per producer does the appends and runs the handles' callbacks; a callback must not
block on another send's result.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

from pylog import _core
from pylog import codecs as _codecs
from pylog.broker.partitioner import DefaultPartitioner, Partitioner, partitioner_for_name
from pylog.errors import (IllegalStateError, InvalidConfigError, OutOfOrderSequenceError, PylogError,
                          RequestTimedOutError, UnknownProducerIdError, UnknownTopicOrPartitionError)

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
        Retry policy (defaults 2147483647, 100, 1000, 120000).
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
                 delivery_timeout_ms: int = 120_000, max_in_flight_requests_per_connection: int = 5,
                 max_in_flight: int | None = None, buffer_memory: int = 32 * 1024 * 1024,
                 max_block_ms: int = 60_000, max_request_size: int = 1024 * 1024,
                 partitioner: Partitioner | str | None = None,
                 key_serializer: Callable[[Any], bytes] | None = None,
                 value_serializer: Callable[[Any], bytes] | None = None,
                 client_id: str = "pylog-producer", metadata_max_age_ms: int = 300_000,
                 request_timeout_ms: int = 30_000) -> None:
        if acks not in _ACKS or isinstance(acks, bool):
            raise InvalidConfigError(f"acks must be 'all', -1, 0 or 1, got {acks!r}")
        self.acks = _ACKS[acks]
        linger_ms = _positive_int("linger_ms", linger_ms)
        batch_size = _positive_int("batch_size", batch_size, maximum=_INT32_MAX)
        retries = _positive_int("retries", retries, maximum=_INT32_MAX)
        self.retry_backoff_ms = _positive_int("retry_backoff_ms", retry_backoff_ms)
        self.retry_backoff_max_ms = max(_positive_int("retry_backoff_max_ms", retry_backoff_max_ms),
                                        self.retry_backoff_ms)
        delivery_timeout_ms = _positive_int("delivery_timeout_ms", delivery_timeout_ms, minimum=1)
        if max_in_flight is not None:
            max_in_flight_requests_per_connection = max_in_flight
        in_flight = _positive_int("max_in_flight_requests_per_connection", max_in_flight_requests_per_connection,
                                  minimum=1)
        buffer_memory = _positive_int("buffer_memory", buffer_memory, minimum=1)
        self.max_block_ms = _positive_int("max_block_ms", max_block_ms)
        max_request_size = _positive_int("max_request_size", max_request_size, minimum=1, maximum=_INT32_MAX)
        self.metadata_max_age_ms = _positive_int("metadata_max_age_ms", metadata_max_age_ms, minimum=1)
        _positive_int("request_timeout_ms", request_timeout_ms, minimum=1)
        if compression_type is None:
            compression_type = "none"
        if compression_type not in ("none", "gzip", "snappy", "lz4", "zstd"):
            raise InvalidConfigError(
                f"compression_type must be none, gzip, snappy, lz4 or zstd, got {compression_type!r}")
        if not _codecs.is_available(compression_type):
            _codecs.compress(compression_type, b"")   # raises CodecNotInstalledError naming the extra
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
            idempotent = False
        if partitioner is None:
            partitioner = DefaultPartitioner()
        elif isinstance(partitioner, str):
            partitioner = partitioner_for_name(partitioner)
        elif not isinstance(partitioner, Partitioner) and not callable(getattr(partitioner, "partition", None)):
            raise InvalidConfigError(f"partitioner must be a Partitioner or a name, not {partitioner!r}")
        for name, fn in (("key_serializer", key_serializer), ("value_serializer", value_serializer)):
            if fn is not None and not callable(fn):
                raise InvalidConfigError(f"{name} must be callable, got {fn!r}")
        self.retries = retries
        self.max_in_flight = in_flight
        self.enable_idempotence = idempotent
        self.compression_type = compression_type
        self.linger_ms = linger_ms
        self.batch_size = batch_size
        self.client_id = client_id
        self.partitioner = partitioner
        self._transport = transport
        self._wake = threading.Condition(threading.Lock())
        self._done = threading.Condition(threading.Lock())
        self._waiters = 0
        self._closing = False
        self._stopped = False
        self._epoch_lock = threading.Lock()
        self._configure(batch_size=batch_size, linger_ms=linger_ms, compression=compression_type,
                        max_request_size=max_request_size, buffer_memory=buffer_memory,
                        partitioner=partitioner, key_serializer=key_serializer,
                        value_serializer=value_serializer, delivery_timeout_ms=delivery_timeout_ms,
                        idempotent=idempotent)
        if idempotent:
            res = transport.init_producer_id()
            res.raise_for_error()
            self._set_producer_id(res.producer_id, res.producer_epoch)
        self._next_metadata = self._now() + self.metadata_max_age_ms
        self._thread = threading.Thread(target=self._run, name=f"pylog-producer-{client_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ hooks of the core

    @staticmethod
    def _now() -> int:
        return time.time_ns() // 1_000_000

    #: Called with the producer once it is closed (the Client that made it forgets it).
    _on_close: Callable[[Any], object] | None = None

    def _topic_metadata(self, topic: str) -> tuple[int, int]:
        return self._transport.topic_metadata(topic)

    def _wake_sender(self) -> None:
        with self._wake:
            self._wake.notify()

    def _expedite(self, batch) -> None:
        self._close_batch(batch)
        self._wake_sender()

    def _wait_for_memory(self, nbytes: int) -> None:
        if not self._wait_room(nbytes, self.max_block_ms / 1000):
            raise self._buffer_full_error()

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
                    now = self._now()
                    delay = self._next_delay(now)
                    if delay == 0:
                        break
                    if delay < 0 and self._closing and not self._incomplete_count():
                        self._stopped = True
                        self._notify_done()
                        return
                    timeout = None if delay < 0 else delay / 1000
                    if delay < 0 and self._pooled_bytes() > _POOL_IDLE_BYTES:
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
                self._send_round()
            except BaseException:  # noqa: BLE001 - the sender must survive anything
                _log.exception("producer sender round failed")
            self._notify_done()

    def _send_round(self) -> None:
        now = self._now()
        if now >= self._next_metadata:
            self._refresh_metadata()
            self._next_metadata = now + self.metadata_max_age_ms
        work = self._drain(now, self._closing, max(self._max_request_bytes(), 1), self.max_in_flight)
        # Every partition's batches in one produce call (one request per leader over the
        # network); what must go again at once (a new epoch) goes in a further call.
        while work:
            sending = []
            for topic, partition, batches in work:
                batches = self._expire(topic, partition, batches)
                if batches:
                    sending.append((topic, partition, batches))
            if not sending:
                return
            epoch = self.producer_epoch
            results = self._transport.produce(
                [(topic, partition, self._prepare(batches)) for topic, partition, batches in sending],
                acks=self.acks)
            work = []
            for (topic, partition, batches), res in zip(sending, results):
                resend = self._handle_results(topic, partition, batches, res, epoch)
                if resend:
                    work.append((topic, partition, resend))

    def _max_request_bytes(self) -> int:
        # Up to max_in_flight batches (and about their bytes) per append of one partition;
        # send_batch's own batches (up to bulk_batch_bytes) count as whole batches too, so
        # several of them go in one append instead of one per sender round.
        return self.max_in_flight * max(self.batch_size, 16384, self._bulk_batch_bytes())

    def _refresh_metadata(self) -> None:
        for topic in self._topics_known():
            try:
                n, max_bytes = self._topic_metadata(topic)
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
                self._rewind(pending[first:])
                for late in pending[first:]:
                    late.fail(err)
                return pending[:first]
        return pending

    def _handle_results(self, topic: str, partition: int, pending: list, results: list, epoch: int) -> list:
        """Complete, requeue or fail a partition's batches by their produce results;
        returns the batches to send again at once (renumbered after a new epoch)."""
        now = self._now()
        for i, (b, res) in enumerate(zip(pending, results)):
            if res.error_code == 0:
                b.complete(res.base_offset if self.acks != 0 else -1, res.log_append_time)
                continue
            exc = res.error
            rest = pending[i:]
            if isinstance(exc, (OutOfOrderSequenceError, UnknownProducerIdError)) and self.enable_idempotence \
                    and b.attempts < self.retries:
                # The broker lost track of us, or our numbering: new epoch, renumber.  (Once
                # per round: other partitions of the same round failing alike just renumber.)
                if self.producer_epoch == epoch:
                    self._bump_epoch()
                for r in rest:
                    r.attempts += 1
                return rest
            if exc.retriable and b.attempts < self.retries and not self._topic_gone(topic, partition):
                retry = rest if self.enable_idempotence else self._settle_independent(b, rest[1:], results[i + 1:])
                for r in retry:
                    r.attempts += 1
                backoff = min(self.retry_backoff_ms * (2 ** max(b.attempts - 1, 0)), self.retry_backoff_max_ms)
                backoff = int(backoff * random.uniform(0.8, 1.2))
                _log.info("%s-%d: retrying %d batches in %d ms after %s", topic, partition, len(retry),
                          backoff, exc)
                self._requeue(topic, partition, retry, now + backoff)
                self._wake_sender()
                return []
            # Fails for good: this batch only; later ones were rejected because of it.
            if isinstance(exc, UnknownTopicOrPartitionError):
                self._forget_topic(topic)
            b.fail(exc)
            self._rewind(rest)
            if self.enable_idempotence:
                return rest[1:]
            # Without sequence numbers the later batches stood on their own.
            for r, rres in zip(rest[1:], results[i + 1:]):
                if rres.error_code == 0:
                    r.complete(rres.base_offset if self.acks != 0 else -1, rres.log_append_time)
                else:
                    r.fail(rres.error)
            return []
        return []

    def _settle_independent(self, first, later: list, results: list) -> list:
        """Without idempotence each batch after a retried one stood on its own: one that
        was appended is done (sending it again would append it twice), one refused for
        good fails; the rest are retried after ``first``.  Returns what to retry."""
        retry = [first]
        for r, res in zip(later, results):
            if res.error_code == 0:
                r.complete(res.base_offset if self.acks != 0 else -1, res.log_append_time)
            elif res.error.retriable and r.attempts < self.retries:
                retry.append(r)
            else:
                r.fail(res.error)
        return retry

    def _topic_gone(self, topic: str, partition: int) -> bool:
        try:
            return partition >= self._transport.topic_metadata(topic)[0]
        except UnknownTopicOrPartitionError:
            return True
        except PylogError:
            return False

    def _bump_epoch(self) -> None:
        with self._epoch_lock:
            res = self._transport.init_producer_id(producer_id=self.producer_id, producer_epoch=self.producer_epoch)
            if res.error_code:
                res = self._transport.init_producer_id()
            res.raise_for_error()
            _log.warning("producer %d: new epoch %d (was %d, %d)", res.producer_id, res.producer_epoch,
                         self.producer_id, self.producer_epoch)
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

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (waiting up to ``timeout`` seconds; None: until done), then
        stop.  Sends still pending after the timeout fail with RequestTimedOutError.
        Idempotent."""
        if self._closing:
            self._thread.join(timeout)
            return
        self._check_not_sender("close the producer")
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
