# Part of pylog._core (included by _core.pyx): the embedded client's per-record paths.
#
# Producer: _ProducerCore.send() writes a record straight into the RecordBatchBuilder of
# its partition's open batch (partitioning by murmur2 in C, no intermediate objects) and
# returns a FutureRecordMetadata, a small object holding the batch and the record's index,
# resolved when the batch is appended.  send_batch() does the same for a whole sequence in
# one C loop.  The sender thread (pylog.client.producer) drains closed batches through
# _drain / _ProducerBatch.complete.
#
# Consumer: decode_fetched() turns fetched batches into ConsumerRecord objects in one C
# loop, with optional deserializers, stopping at the first record a deserializer rejects.
#
# Threads: the accumulator's state (open batches, ready queues, memory count, sequence
# numbers) is guarded by one PyThread lock taken by every method that touches it; no
# Python code runs while it is held except the partitioner's on_new_batch (a C method of
# the built-in partitioners).  Batch completion callbacks run in the completing thread.
cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.pythread cimport (PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_release_lock, PyThread_type_lock)

import asyncio as _client_asyncio
import collections as _client_collections
import logging as _client_logging

from pylog.errors import (IllegalStateError, InvalidTimestampError, RecordTypeError,
                          UnknownTopicOrPartitionError)

_client_log = _client_logging.getLogger("pylog.client")

cdef enum:
    PB_OPEN = 0          # being filled by send()
    PB_CLOSED = 1        # full or lingered: waiting in its partition's ready queue
    PB_SENDING = 2       # taken by the sender (sequence assigned, maybe being retried)
    PB_DONE = 3          # appended (or failed): handles resolved

    SENDER_RUNNING = 0
    SENDER_IDLE = 1      # nothing buffered: wake on the next record
    SENDER_TIMED = 2     # sleeping until a linger deadline: wake when much is ready

    PART_DEFAULT = 0     # DefaultPartitioner: murmur2 of keys, sticky for keyless
    PART_STICKY = 1      # UniformStickyPartitioner, or DefaultPartitioner(ignore_keys=True)
    PART_CUSTOM = 2      # any other partitioner: one Python call per record


cdef inline void _client_lock(PyThread_type_lock lock) noexcept:
    if not PyThread_acquire_lock(lock, 0):
        with nogil:
            PyThread_acquire_lock(lock, 1)


cdef inline void _client_unlock(PyThread_type_lock lock) noexcept:
    PyThread_release_lock(lock)


cdef inline int _client_span(object obj, Span *s, Py_buffer *view, bint *held, str what) except -1:
    """Point s at a key or value: bytes directly, bytes-like through a buffer export
    (released by the caller when *held), None as null; anything else is a RecordTypeError."""
    if obj is None:
        s.p = NULL
        s.n = -1
        return 0
    if PyBytes_CheckExact(obj):
        s.p = PyBytes_AS_STRING(obj)
        s.n = PyBytes_GET_SIZE(obj)
        return 0
    if isinstance(obj, str):
        raise RecordTypeError(f"record {what} must be bytes-like or None, not str: encode it, or give "
                              f"the producer a {what}_serializer")
    try:
        PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    except TypeError:
        raise RecordTypeError(f"record {what} must be bytes-like or None, not {type(obj).__name__}: "
                              f"give the producer a {what}_serializer") from None
    held[0] = True
    s.p = <const char *>view.buf
    s.n = view.len
    return 0


cdef tuple _client_headers(object headers, int32_t *count, Py_ssize_t *size):
    """Check record headers, a sequence of (str, bytes-like or None) pairs, and return
    them as an immutable tuple of (str, bytes or None) with their encoded size."""
    cdef Py_ssize_t n, i, kn, vn, total = 0
    cdef list out
    try:
        items = list(headers)
    except TypeError:
        raise RecordTypeError(f"record headers must be a sequence of (str, bytes) pairs, "
                              f"not {type(headers).__name__}") from None
    n = len(items)
    out = []
    for i in range(n):
        item = items[i]
        try:
            hk, hv = item
        except (TypeError, ValueError):
            raise RecordTypeError(f"record header {item!r} is not a (str, bytes) pair") from None
        if not isinstance(hk, str):
            raise RecordTypeError(f"record header key must be str, not {type(hk).__name__}")
        if hv is not None and not PyBytes_CheckExact(hv):
            if isinstance(hv, str):
                raise RecordTypeError(f"value of record header {hk!r} must be bytes-like or None, not str")
            try:
                hv = bytes(memoryview(hv).cast("B"))
            except TypeError:
                raise RecordTypeError(f"value of record header {hk!r} must be bytes-like or None, "
                                      f"not {type(hv).__name__}") from None
        PyUnicode_AsUTF8AndSize(hk, &kn)
        vn = -1 if hv is None else PyBytes_GET_SIZE(hv)
        total += varint_size(kn) + kn + varint_size(vn) + (vn if vn > 0 else 0)
        out.append((hk, hv))
    count[0] = <int32_t>n
    size[0] = total
    return tuple(out)


cdef uint8_t *_client_write_headers(uint8_t *p, tuple headers) noexcept:
    """Write headers checked by _client_headers (their size is reserved)."""
    cdef Py_ssize_t kn, vn
    cdef const char *k
    for item in headers:
        hk = (<tuple>item)[0]
        hv = (<tuple>item)[1]
        k = PyUnicode_AsUTF8AndSize(hk, &kn)
        vn = -1 if hv is None else PyBytes_GET_SIZE(hv)
        p = put_varint(p, kn)
        memcpy(p, k, kn)
        p += kn
        p = put_varint(p, vn)
        if vn > 0:
            memcpy(p, PyBytes_AS_STRING(hv), vn)
            p += vn
    return p


cdef inline int64_t _client_timestamp(object ts) except? -1:
    if ts is None:
        return pylog_now_ms()
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise InvalidTimestampError(f"timestamp_ms must be an int >= 0 (ms since the epoch) or None, got {ts!r}")
    return <int64_t>ts


cdef inline int32_t _client_partition(object partition, int32_t n, str topic) except -1:
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise UnknownTopicOrPartitionError(f"partition must be an int, not {type(partition).__name__}")
    if not 0 <= partition < n:
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} has partitions 0..{n - 1}; there is no partition {partition}")
    return <int32_t>partition


cdef bytes _client_patch_producer(bytes data, int64_t producer_id, int producer_epoch, int32_t base_sequence):
    """A copy of a built batch with new producer id, epoch and base sequence (and CRC)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), n)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    if n < BATCH_HEADER_SIZE:
        raise CorruptRecordError("cannot renumber a truncated batch")
    pylog_put_be64(p + BATCH_PRODUCER_ID, producer_id)
    pylog_put_be16(p + BATCH_PRODUCER_EPOCH, <int16_t>producer_epoch)
    pylog_put_be32(p + BATCH_BASE_SEQUENCE, base_sequence)
    pylog_put_be32(p + BATCH_CRC, <int32_t>pylog_crc32c(0, p + BATCH_ATTRIBUTES, <size_t>(n - BATCH_ATTRIBUTES)))
    return out


cdef inline void _client_reset_builder(RecordBatchBuilder b) noexcept:
    b.length = BATCH_HEADER_SIZE
    b.count = 0
    b.base_ts = -1
    b.max_ts = -1
    b.producer_id = -1
    b.producer_epoch = -1
    b.base_sequence = -1


# ---------------------------------------------------------------------------------------
# Record metadata and send handles

@cython.final
@cython.freelist(64)
@cython.no_gc
cdef class RecordMetadata:
    """Where a sent record landed.

    Attributes
    ----------
    topic : str
    partition : int
    offset : int
        The record's offset (-1 with ``acks=0``: the producer does not wait to learn it).
    timestamp : int
        The record's timestamp: the producer's (CreateTime) or the broker's append time
        (LogAppendTime topics).
    serialized_key_size, serialized_value_size, serialized_header_size : int
        Sizes in bytes (-1 for a null key or value).
    """
    cdef readonly str topic
    cdef readonly int partition
    cdef readonly int64_t offset
    cdef readonly int64_t timestamp
    cdef readonly int serialized_key_size
    cdef readonly int serialized_value_size
    cdef readonly int serialized_header_size

    def __init__(self, str topic, int partition, int64_t offset, int64_t timestamp,
                 int serialized_key_size=-1, int serialized_value_size=-1, int serialized_header_size=-1):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.serialized_key_size = serialized_key_size
        self.serialized_value_size = serialized_value_size
        self.serialized_header_size = serialized_header_size

    def __repr__(self):
        return (f"RecordMetadata(topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, timestamp={self.timestamp})")

    def __eq__(self, other):
        if not isinstance(other, RecordMetadata):
            return NotImplemented
        cdef RecordMetadata o = <RecordMetadata>other
        return (self.topic == o.topic and self.partition == o.partition and self.offset == o.offset
                and self.timestamp == o.timestamp)

    def __hash__(self):
        return hash((self.topic, self.partition, self.offset, self.timestamp))

    def __reduce__(self):
        return (RecordMetadata, (self.topic, self.partition, self.offset, self.timestamp,
                                 self.serialized_key_size, self.serialized_value_size,
                                 self.serialized_header_size))


cdef void _client_run_callbacks(list callbacks, object arg_ok, object arg_err, object self_arg) noexcept:
    # kind 0: fn(*args, metadata) on success; 1: fn(*args, exc) on failure; 2: fn(handle)
    for kind, fn, args, kwargs in callbacks:
        try:
            if kind == 2:
                fn(self_arg)
            elif kind == 0 and arg_err is None:
                fn(*args, arg_ok, **kwargs)
            elif kind == 1 and arg_err is not None:
                fn(*args, arg_err, **kwargs)
        except BaseException:
            _client_log.exception("producer callback %r raised", fn)


class _AsyncWaker:
    """Done-callback that completes an asyncio future on its own loop's thread."""

    __slots__ = ("loop", "future")

    def __init__(self, loop, future):
        self.loop = loop
        self.future = future

    def __call__(self, _handle):
        try:
            self.loop.call_soon_threadsafe(_client_set_future, self.future)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


def _client_set_future(future):
    if not future.done():
        future.set_result(None)


async def _client_await(handle):
    if not handle.done():
        loop = _client_asyncio.get_running_loop()
        future = loop.create_future()
        handle.add_done_callback(_AsyncWaker(loop, future))
        handle._expedite()
        await future
    return handle.result()


@cython.final
@cython.freelist(1024)
@cython.no_gc
cdef class FutureRecordMetadata:
    """What :meth:`Producer.send` returns: the record's future :class:`RecordMetadata`.

    Resolved when the record's batch is appended (or fails).  ``result()`` waits for it
    (in a thread), ``await handle`` waits for it in asyncio, ``add_callback`` /
    ``add_errback`` / ``add_done_callback`` run code when it resolves, in the thread that
    resolves it (the producer's sender thread) or at once if it already has.  Waiting on a
    handle sends its batch at once rather than after ``linger_ms``.

    Thread-safe.  Cheap: it holds its batch and its index in it, nothing else.  It is not
    tracked by the cycle collector (a producer keeps millions alive): the only cycles it
    can be part of go through its callbacks, which are dropped once they have run.
    """
    cdef _ProducerBatch batch
    cdef int32_t index
    cdef int32_t key_size
    cdef int32_t value_size
    cdef int32_t header_size
    cdef int64_t timestamp
    cdef list callbacks

    @property
    def topic(self):
        return self.batch.queue.topic

    @property
    def partition(self):
        return self.batch.queue.partition

    def done(self):
        """True once the record's batch was appended or failed."""
        return self.batch.state == PB_DONE

    def succeeded(self):
        return self.batch.state == PB_DONE and self.batch.error is None

    def failed(self):
        return self.batch.state == PB_DONE and self.batch.error is not None

    cdef RecordMetadata _metadata(self):
        cdef _ProducerBatch b = self.batch
        cdef RecordMetadata m = RecordMetadata.__new__(RecordMetadata)
        m.topic = b.queue.topic
        m.partition = b.queue.partition
        m.offset = b.base_offset + self.index if b.base_offset >= 0 else -1
        m.timestamp = b.log_append_time if b.log_append_time >= 0 else self.timestamp
        m.serialized_key_size = self.key_size
        m.serialized_value_size = self.value_size
        m.serialized_header_size = self.header_size
        return m

    def result(self, timeout=None):
        """The :class:`RecordMetadata`, waiting up to ``timeout`` seconds (None: as long as
        the producer's ``delivery_timeout_ms``).

        Raises
        ------
        PylogError
            The batch failed (the error from the broker, or RequestTimedOutError once the
            delivery timeout passed).
        RequestTimedOutError
            ``timeout`` passed first (the send goes on).
        """
        if self.batch.state != PB_DONE:
            self.batch.core._wait_batch(self.batch, timeout)
        if self.batch.error is not None:
            raise self.batch.error
        return self._metadata()

    get = result

    def exception(self, timeout=None):
        """The error of a failed send (None on success), waiting like :meth:`result`."""
        if self.batch.state != PB_DONE:
            self.batch.core._wait_batch(self.batch, timeout)
        return self.batch.error

    def _expedite(self):
        if self.batch.state != PB_DONE:
            self.batch.core._expedite(self.batch)

    cdef int _add(self, int kind, object fn, tuple args, dict kwargs) except -1:
        cdef _ProducerBatch b = self.batch
        cdef bint now
        if not callable(fn):
            raise TypeError(f"callback {fn!r} is not callable")
        _client_lock(b.core._lock)
        now = b.state == PB_DONE
        if not now:
            if self.callbacks is None:
                self.callbacks = []
                if b.listeners is None:
                    b.listeners = []
                b.listeners.append(self)
            self.callbacks.append((kind, fn, args, kwargs))
        _client_unlock(b.core._lock)
        if now:
            _client_run_callbacks([(kind, fn, args, kwargs)],
                                  self._metadata() if b.error is None else None, b.error, self)
        return 0

    def add_callback(self, fn, *args, **kwargs):
        """Call ``fn(*args, metadata, **kwargs)`` when the send succeeds."""
        self._add(0, fn, args, kwargs)
        return self

    def add_errback(self, fn, *args, **kwargs):
        """Call ``fn(*args, exception, **kwargs)`` when the send fails."""
        self._add(1, fn, args, kwargs)
        return self

    def add_done_callback(self, fn):
        """Call ``fn(handle)`` when the send resolves either way (as concurrent.futures)."""
        self._add(2, fn, (), {})

    cdef void _batch_done(self, _ProducerBatch batch) noexcept:
        cdef list callbacks = self.callbacks
        self.callbacks = None
        if callbacks:
            try:
                meta = self._metadata() if batch.error is None else None
            except BaseException:
                _client_log.exception("building record metadata failed")
                return
            _client_run_callbacks(callbacks, meta, batch.error, self)

    def __await__(self):
        return _client_await(self).__await__()

    def __repr__(self):
        state = ("pending", "pending", "sending", "done")[self.batch.state]
        return f"<FutureRecordMetadata {self.batch.queue.topic}-{self.batch.queue.partition} {state}>"


@cython.final
cdef class BatchSendFuture:
    """What :meth:`Producer.send_batch` returns: resolves when every batch holding its
    records is appended.

    ``result()`` returns the records' offsets as an int64 numpy array in input order (-1
    everywhere with ``acks=0``); :attr:`partitions` says where each record went.  Awaitable,
    with ``done()``, ``exception()`` and ``add_done_callback(fn)`` like
    :class:`FutureRecordMetadata`.  Thread-safe.
    """
    cdef _ProducerCore core
    cdef list batches
    cdef object batch_ids            # int32 per record: index into batches
    cdef object rel                  # int32 per record: index within its batch
    cdef readonly object partitions  # int32 per record
    cdef Py_ssize_t pending
    cdef object error
    cdef object offsets
    cdef list callbacks
    cdef readonly int64_t timestamp

    def done(self):
        return self.pending == 0

    def __len__(self):
        return len(self.partitions)

    cdef void _batch_done(self, _ProducerBatch batch) noexcept:
        cdef list callbacks
        self.pending -= 1
        if batch.error is not None and self.error is None:
            self.error = batch.error
        if self.pending > 0:
            return
        try:
            self._fill()
        except BaseException as exc:
            self.error = exc
        callbacks = self.callbacks
        self.callbacks = None
        if callbacks:
            _client_run_callbacks(callbacks, None, None, self)

    cdef int _fill(self) except -1:
        cdef Py_ssize_t i, n = len(self.partitions)
        cdef int32_t[::1] ids = self.batch_ids
        cdef int32_t[::1] rel = self.rel
        cdef int64_t[::1] out
        cdef Py_ssize_t nb = len(self.batches)
        cdef int64_t *bases = <int64_t *>PyMem_Malloc((nb if nb > 0 else 1) * sizeof(int64_t))
        if bases == NULL:
            raise MemoryError()
        try:
            for i in range(nb):
                bases[i] = (<_ProducerBatch>self.batches[i]).base_offset
            arr = _broker_np.empty(n, dtype=_broker_np.int64)
            out = arr
            for i in range(n):
                out[i] = bases[ids[i]] + rel[i] if bases[ids[i]] >= 0 else -1
        finally:
            PyMem_Free(bases)
        self.offsets = arr
        self.batches = None
        return 0

    def _wait(self, timeout):
        if self.pending == 0:
            return
        for b in list(self.batches or ()):
            if (<_ProducerBatch>b).state != PB_DONE:
                self.core._wait_batch(b, timeout)

    def result(self, timeout=None):
        """Offsets of the records (int64 array, input order).  Raises the first batch's
        error if any batch failed (other batches may have been appended)."""
        self._wait(timeout)
        if self.error is not None:
            raise self.error
        return self.offsets

    def exception(self, timeout=None):
        self._wait(timeout)
        return self.error

    def _expedite(self):
        for b in list(self.batches or ()):
            if (<_ProducerBatch>b).state != PB_DONE:
                self.core._expedite(b)

    def add_done_callback(self, fn):
        cdef bint now
        _client_lock(self.core._lock)
        now = self.pending == 0
        if not now:
            if self.callbacks is None:
                self.callbacks = []
            self.callbacks.append((2, fn, (), {}))
        _client_unlock(self.core._lock)
        if now:
            _client_run_callbacks([(2, fn, (), {})], None, None, self)

    def __await__(self):
        return _client_await(self).__await__()


# ---------------------------------------------------------------------------------------
# Batches and queues

@cython.final
cdef class _BuiltBatch:
    """The bytes of an uncompressed batch, in place in its builder's buffer (the header
    written there): what the sender hands the broker instead of a copy.  A read-only
    buffer; the builder goes back to the pool only once no view of it is left."""
    cdef RecordBatchBuilder builder
    cdef Py_ssize_t size
    cdef int exports

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, <void *>self.builder.buf, self.size, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1


@cython.final
cdef class _ProducerBatch:
    """A batch of one partition, from its first record to its append.  The sender reads
    ``data`` (the built batch bytes, kept for retries) and calls ``complete`` or ``fail``."""
    cdef RecordBatchBuilder builder
    cdef readonly _PartitionQueue queue
    cdef readonly _ProducerCore core
    cdef readonly int64_t created_ms
    cdef readonly int64_t deadline_ms
    cdef Py_ssize_t reserved
    cdef readonly int state
    cdef readonly int64_t base_offset
    cdef readonly int64_t log_append_time
    cdef readonly object error
    cdef list listeners
    cdef public int attempts
    cdef readonly int32_t base_sequence
    cdef int64_t seq_producer_id
    cdef int seq_epoch
    cdef readonly int32_t record_count
    cdef readonly object data
    cdef _BuiltBatch built             # data is a view of it (uncompressed batches)

    @property
    def topic(self):
        return self.queue.topic

    @property
    def partition(self):
        return self.queue.partition

    def complete(self, int64_t base_offset, int64_t log_append_time=-1):
        """The batch was appended at ``base_offset`` (-1: unknown, acks=0)."""
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self._finish(None)

    def fail(self, error):
        """The batch failed for good: every handle of it raises ``error``."""
        self.error = error
        self._finish(error)

    cdef int _finish(self, object error) except -1:
        cdef _ProducerCore core = self.core
        cdef list listeners
        _client_lock(core._lock)
        if self.state == PB_DONE:
            _client_unlock(core._lock)
            return 0
        self.state = PB_DONE
        core._buffered -= self.reserved
        self.reserved = 0
        core._incomplete.discard(self)
        self.data = None
        if self.builder is not None:
            if self.built is None or self.built.exports == 0:
                core._release_builder(self.builder)
            # else: someone still holds a view of its buffer; it is freed with the view
            self.builder = None
        self.built = None
        listeners = self.listeners
        self.listeners = None
        _client_unlock(core._lock)
        if listeners:
            # Listeners: handles with callbacks, and bulk sends.
            for l in listeners:
                if type(l) is FutureRecordMetadata:
                    (<FutureRecordMetadata>l)._batch_done(self)
                else:
                    (<BatchSendFuture>l)._batch_done(self)
        return 0

    cdef int _build(self) except -1:
        """Build the batch bytes once (under the core lock the caller holds).  An
        uncompressed batch is finished in place in its builder and handed on as a view
        (no copy); a compressed one is built by the builder."""
        cdef _ProducerCore core = self.core
        cdef RecordBatchBuilder b = self.builder
        cdef _BuiltBatch built
        if self.data is not None:
            return 0
        if core._idempotent:
            b.set_producer_state(core._producer_id, core._producer_epoch, self.base_sequence)
        if b.codec == 0 and not b.log_append_time and not b.is_transactional and not b.is_control:
            write_header(b.buf, b.length, 0, b.partition_leader_epoch, 0,
                         b.count - 1 if b.count > 0 else 0, b.base_ts, b.max_ts,
                         b.producer_id, b.producer_epoch, b.base_sequence, b.count)
            built = _BuiltBatch.__new__(_BuiltBatch)
            built.builder = b
            built.size = b.length
            self.built = built
            self.data = memoryview(built)
            return 0
        self.data = b.build()
        core._release_builder(b)
        self.builder = None
        return 0

    cdef int _renumber(self, int64_t producer_id, int producer_epoch, int32_t base_sequence) except -1:
        """New producer fields for a built batch (header and CRC rewritten)."""
        cdef uint8_t *p
        cdef Py_ssize_t n
        if self.built is not None:
            p = self.builder.buf
            n = self.built.size
            pylog_put_be64(p + BATCH_PRODUCER_ID, producer_id)
            pylog_put_be16(p + BATCH_PRODUCER_EPOCH, <int16_t>producer_epoch)
            pylog_put_be32(p + BATCH_BASE_SEQUENCE, base_sequence)
            pylog_put_be32(p + BATCH_CRC, <int32_t>pylog_crc32c(0, p + BATCH_ATTRIBUTES,
                                                                 <size_t>(n - BATCH_ATTRIBUTES)))
        else:
            self.data = _client_patch_producer(self.data, producer_id, producer_epoch, base_sequence)
        return 0

    def __repr__(self):
        return (f"<_ProducerBatch {self.queue.topic}-{self.queue.partition} records={self.record_count} "
                f"state={self.state} seq={self.base_sequence}>")


@cython.final
cdef class _PartitionQueue:
    cdef readonly str topic
    cdef readonly int32_t partition
    cdef _ProducerBatch open
    cdef readonly object ready          # deque of closed batches, oldest first
    cdef public int32_t next_sequence
    cdef public int64_t blocked_until   # retry backoff: nothing of this partition before it

    def __repr__(self):
        return f"<_PartitionQueue {self.topic}-{self.partition} ready={len(self.ready)}>"


@cython.final
cdef class _TopicQueue:
    cdef readonly str name
    cdef readonly int32_t num_partitions
    cdef list parts
    cdef tuple available       # every partition (all have a leader on one node)
    cdef readonly Py_ssize_t max_record_bytes


# ---------------------------------------------------------------------------------------
# The accumulator

cdef class _ProducerCore:
    """The producer's record accumulator and per-record send path (subclassed by
    :class:`pylog.client.producer.Producer`, which adds the sender thread and the waits).

    The subclass provides ``_topic_metadata(topic) -> (partitions, max_batch_bytes)``,
    ``_wake_sender()``, ``_wait_for_memory(nbytes)``, ``_wait_batch(batch, timeout)`` and
    ``_expedite(batch)``.
    """
    cdef dict _topics
    cdef list _queues
    cdef object _partitioner
    cdef int _pkind
    cdef Py_ssize_t _batch_size
    cdef Py_ssize_t _max_request_size
    cdef readonly Py_ssize_t _buffer_memory
    cdef Py_ssize_t _buffered
    cdef Py_ssize_t _ready_bytes
    cdef Py_ssize_t _wake_bytes
    cdef object _compression
    cdef int64_t _linger_ms
    cdef int64_t _delivery_timeout_ms
    cdef PyThread_type_lock _lock
    cdef int _sender_state
    cdef bint _closed
    cdef object _key_serializer
    cdef object _value_serializer
    cdef list _pool
    cdef set _incomplete
    cdef bint _idempotent
    cdef int64_t _producer_id
    cdef int _producer_epoch

    def __cinit__(self, *args, **kwargs):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError()
        self._topics = {}
        self._queues = []
        self._pool = []
        self._incomplete = set()
        self._sender_state = SENDER_RUNNING
        self._producer_id = -1
        self._producer_epoch = -1
        self._closed = True

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)
            self._lock = NULL

    def _configure(self, *, Py_ssize_t batch_size, int64_t linger_ms, compression, Py_ssize_t max_request_size,
                   Py_ssize_t buffer_memory, partitioner, key_serializer, value_serializer,
                   int64_t delivery_timeout_ms, bint idempotent):
        codec_from(compression)      # UnsupportedCompressionTypeError for a bad name
        self._compression = compression
        self._batch_size = batch_size
        self._linger_ms = linger_ms
        self._max_request_size = max_request_size
        self._buffer_memory = buffer_memory
        self._wake_bytes = max(4 * batch_size, min(buffer_memory // 4, 1024 * 1024))
        self._delivery_timeout_ms = delivery_timeout_ms
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._idempotent = idempotent
        self._partitioner = partitioner
        if type(partitioner) is DefaultPartitioner:
            self._pkind = PART_STICKY if (<DefaultPartitioner>partitioner)._ignore_keys else PART_DEFAULT
        elif type(partitioner) is UniformStickyPartitioner:
            self._pkind = PART_STICKY
        else:
            self._pkind = PART_CUSTOM
        self._closed = False

    def _set_producer_id(self, int64_t producer_id, int producer_epoch):
        """A new producer id or epoch: sequences restart at 0 on every partition (batches
        already numbered keep their numbers and epoch)."""
        cdef _PartitionQueue pq
        _client_lock(self._lock)
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        for pq in self._queues:
            pq.next_sequence = 0
        _client_unlock(self._lock)

    @property
    def producer_id(self):
        return self._producer_id

    @property
    def producer_epoch(self):
        return self._producer_epoch

    @property
    def buffered_bytes(self):
        """Bytes of records accepted and not yet appended (bounded by buffer_memory)."""
        return self._buffered

    # -- topics

    cdef _TopicQueue _topic_queue(self, object topic):
        cdef _TopicQueue tq
        cdef PyObject *o
        if not isinstance(topic, str):
            raise UnknownTopicOrPartitionError(f"topic must be a str, not {type(topic).__name__}")
        count, max_bytes = self._topic_metadata(topic)
        _client_lock(self._lock)
        try:
            o = PyDict_GetItem(self._topics, topic)
            if o != NULL:
                return <_TopicQueue>o
            tq = _TopicQueue.__new__(_TopicQueue)
            tq.name = topic
            tq.parts = []
            tq.num_partitions = 0
            tq.max_record_bytes = min(<Py_ssize_t>max_bytes, self._max_request_size)
            self._grow(tq, count)
            self._topics[topic] = tq
            return tq
        finally:
            _client_unlock(self._lock)

    cdef int _grow(self, _TopicQueue tq, int32_t count) except -1:
        cdef _PartitionQueue pq
        cdef int32_t p
        for p in range(tq.num_partitions, count):
            pq = _PartitionQueue.__new__(_PartitionQueue)
            pq.topic = tq.name
            pq.partition = p
            pq.ready = _client_collections.deque()
            tq.parts.append(pq)
            self._queues.append(pq)
        if count > tq.num_partitions:
            tq.num_partitions = count
        tq.available = tuple(range(tq.num_partitions))
        return 0

    def _update_topic(self, str topic, int32_t count, Py_ssize_t max_bytes):
        """Metadata refresh: more partitions, a new max.message.bytes."""
        cdef PyObject *o
        cdef _TopicQueue tq
        _client_lock(self._lock)
        try:
            o = PyDict_GetItem(self._topics, topic)
            if o != NULL:
                tq = <_TopicQueue>o
                tq.max_record_bytes = min(max_bytes, self._max_request_size)
                self._grow(tq, count)
        finally:
            _client_unlock(self._lock)

    def _forget_topic(self, str topic):
        """The topic is gone: the next send looks it up again (queued batches stay)."""
        _client_lock(self._lock)
        self._topics.pop(topic, None)
        _client_unlock(self._lock)

    def _topics_known(self):
        return list(self._topics)

    # -- batches

    cdef RecordBatchBuilder _new_builder(self):
        cdef RecordBatchBuilder b
        if self._pool:
            b = <RecordBatchBuilder>self._pool.pop()
            _client_reset_builder(b)
            return b
        return RecordBatchBuilder(compression=self._compression, batch_size=self._batch_size)

    cdef void _release_builder(self, RecordBatchBuilder b) noexcept:
        # Keep a few for reuse: their grown buffers make the next batches allocation-free.
        if len(self._pool) < 64 and b.capacity <= 4 * self._batch_size + 65536:
            self._pool.append(b)

    cdef int _close_open(self, _PartitionQueue pq) except -1:
        """Move pq's open batch to its ready queue (lock held)."""
        cdef _ProducerBatch b = pq.open
        if b is None:
            return 0
        pq.open = None
        if b.builder.count == 0:
            # Never got a record (a failed write): nothing to send.
            self._incomplete.discard(b)
            self._release_builder(b.builder)
            b.builder = None
            b.state = PB_DONE
            return 0
        b.state = PB_CLOSED
        b.record_count = b.builder.count
        pq.ready.append(b)
        self._ready_bytes += b.builder.length
        return 0

    cdef _ProducerBatch _open_batch(self, _PartitionQueue pq, int64_t now):
        """Close pq's open batch (if any) and start a new one (lock held)."""
        cdef _ProducerBatch b
        self._close_open(pq)
        b = _ProducerBatch.__new__(_ProducerBatch)
        b.builder = self._new_builder()
        b.queue = pq
        b.core = self
        b.created_ms = now
        b.deadline_ms = now + self._delivery_timeout_ms
        b.state = PB_OPEN
        b.base_offset = -1
        b.log_append_time = -1
        b.base_sequence = -1
        b.seq_producer_id = -1
        b.seq_epoch = -1
        pq.open = b
        self._incomplete.add(b)
        return b

    cdef _PartitionQueue _sticky_queue(self, _TopicQueue tq, Py_ssize_t size, int32_t nparts):
        """The queue keyless records go to: the topic's sticky partition among the first
        ``nparts``, moved on when the batch there has no room (KIP-480).  Lock held."""
        # The partitions are passed as available so the next sticky choice avoids the one
        # whose batch just closed (Kafka's sticky partitioner picks another one).
        cdef tuple available = tq.available if nparts == tq.num_partitions else tuple(range(nparts))
        cdef int32_t p = (<_StickyBase>self._partitioner)._sticky_partition(tq.name, nparts, available)
        cdef _PartitionQueue pq = <_PartitionQueue>tq.parts[p]
        cdef _ProducerBatch b = pq.open
        if b is not None and b.builder.count > 0 and b.builder.length + size > self._batch_size:
            self._close_open(pq)
            self._partitioner.on_new_batch(tq.name, p)
            p = (<_StickyBase>self._partitioner)._sticky_partition(tq.name, nparts, available)
            pq = <_PartitionQueue>tq.parts[p]
        return pq

    # -- sending

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        """Queue one record for ``topic``; returns its :class:`FutureRecordMetadata`.

        Parameters
        ----------
        topic : str
        value, key : bytes-like or None
            (Or whatever the producer's serializers take.)
        headers : sequence of (str, bytes or None), optional
        partition : int, optional
            Explicit partition; otherwise the partitioner chooses (murmur2 of the key,
            sticky for keyless records, by default).
        timestamp_ms : int, optional
            CreateTime in ms since the epoch (default: now).

        Raises
        ------
        UnknownTopicOrPartitionError
            The topic or partition does not exist.
        RecordTooLargeError
            The record cannot fit a batch of the topic's ``max.message.bytes`` or the
            producer's ``max_request_size``.
        RecordTypeError
            A key, value or header of the wrong type.
        InvalidTimestampError
            A negative or non-int timestamp.
        IllegalStateError
            The producer is closed.
        RequestTimedOutError
            ``buffer_memory`` stayed full for ``max_block_ms``.

        Nothing is queued when it raises.
        """
        cdef _TopicQueue tq
        cdef _PartitionQueue pq
        cdef _ProducerBatch b
        cdef RecordBatchBuilder builder
        cdef FutureRecordMetadata h
        cdef PyObject *o
        cdef Span k, v
        cdef Py_buffer kview, vview
        cdef bint kheld = False, vheld = False, wake = False
        cdef int32_t p, hcount = 0
        cdef Py_ssize_t hsize = 0, size
        cdef int64_t ts
        cdef tuple htuple = None
        cdef uint8_t *out
        if self._closed:
            raise IllegalStateError("cannot send: the producer is closed")
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        o = PyDict_GetItem(self._topics, topic) if type(topic) is str else NULL
        tq = <_TopicQueue>o if o != NULL else self._topic_queue(topic)
        ts = pylog_now_ms() if timestamp_ms is None else _client_timestamp(timestamp_ms)
        try:
            _client_span(key, &k, &kview, &kheld, "key")
            _client_span(value, &v, &vview, &vheld, "value")
            if headers:
                htuple = _client_headers(headers, &hcount, &hsize)
            size = RECORD_MAX_OVERHEAD + (k.n if k.n > 0 else 0) + (v.n if v.n > 0 else 0) + hsize
            if size + BATCH_HEADER_SIZE > tq.max_record_bytes:
                raise RecordTooLargeError(
                    f"a record of about {size + BATCH_HEADER_SIZE} bytes does not fit a batch of at most "
                    f"{tq.max_record_bytes} bytes (topic {tq.name!r} max.message.bytes, producer max_request_size)")
            if partition is not None:
                p = _client_partition(partition, tq.num_partitions, tq.name)
            elif self._pkind == PART_DEFAULT and k.n >= 0:
                p = _broker_key_partition(<const uint8_t *>k.p, k.n, tq.num_partitions)
            elif self._pkind != PART_CUSTOM:
                p = -1
            else:
                p = _client_partition(self._partitioner.partition(
                    tq.name, key, None if k.n < 0 else PyBytes_FromStringAndSize(k.p, k.n), tq.num_partitions, None),
                    tq.num_partitions, tq.name)
            if self._buffered + size > self._buffer_memory and self._buffered > 0:
                self._wait_for_memory(size)
            _client_lock(self._lock)
            try:
                if p < 0:
                    pq = self._sticky_queue(tq, size, tq.num_partitions)
                else:
                    pq = <_PartitionQueue>tq.parts[p]
                b = pq.open
                if b is None or (b.builder.count > 0 and b.builder.length + size > self._batch_size):
                    if b is not None and self._ready_bytes + b.builder.length >= self._wake_bytes:
                        if self._sender_state != SENDER_RUNNING:
                            self._sender_state = SENDER_RUNNING
                            wake = True
                    b = self._open_batch(pq, pylog_now_ms())
                builder = b.builder
                builder._reserve(size)
                builder._start_record(ts)
                out = builder._write_record(builder.buf + builder.length, ts, k.p, k.n, v.p, v.n, hcount, hsize)
                if hcount:
                    out = _client_write_headers(out, htuple)
                builder.length = out - builder.buf
                builder.count += 1
                b.reserved += size
                self._buffered += size
                h = FutureRecordMetadata.__new__(FutureRecordMetadata)
                h.batch = b
                h.index = builder.count - 1
                h.timestamp = ts
                h.key_size = <int32_t>k.n
                h.value_size = <int32_t>v.n
                h.header_size = <int32_t>hsize
                if self._sender_state == SENDER_IDLE:
                    self._sender_state = SENDER_RUNNING
                    wake = True
            finally:
                _client_unlock(self._lock)
        finally:
            if kheld:
                PyBuffer_Release(&kview)
            if vheld:
                PyBuffer_Release(&vview)
        if wake:
            self._wake_sender()
        return h

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def send_batch(self, topic, values, keys=None, partition=None, timestamp_ms=None):
        """Queue many records at once, without a Python loop per record.

        Parameters
        ----------
        topic : str
        values : sequence of bytes or None, or a numpy array
            A list/tuple (or object array) of bytes or None; a 2-D uint8 array (each row
            one value); or a 1-D fixed-width bytes array (dtype ``S<n>`` / ``V<n>``, every
            value exactly n bytes).
        keys : same forms as values, optional
            One per value.  Keyed records are partitioned by murmur2 like :meth:`send`.
        partition : int, optional
            Every record to this partition.
        timestamp_ms : int, optional
            One timestamp for all (default: now).

        Returns
        -------
        BatchSendFuture

        Raises
        ------
        The errors of :meth:`send` (checked for every record before any is queued), and
        RecordTypeError for items that are not bytes or None.
        """
        cdef _TopicQueue tq
        cdef _ProducerBatch b
        cdef _PartitionQueue pq
        cdef RecordBatchBuilder builder
        cdef BatchSendFuture fut
        cdef _Column vcol, kcol
        cdef Py_ssize_t n, i, size, total = 0, max_size, chunk_start, chunk_end, chunk_bytes
        cdef int32_t p, fixed_p = -1, nparts
        cdef int32_t[::1] parts
        cdef int32_t[::1] ids
        cdef int32_t[::1] rel
        cdef int64_t ts
        cdef const char *kp
        cdef const char *vp
        cdef Py_ssize_t kn, vn
        cdef uint8_t *out
        cdef list batches = []
        cdef list cur_batch
        cdef int32_t *cur_ids = NULL
        cdef bint keyed
        cdef PyObject *o
        if self._closed:
            raise IllegalStateError("cannot send: the producer is closed")
        if self._key_serializer is not None or self._value_serializer is not None:
            raise IllegalStateError("send_batch takes serialized bytes: use a producer without serializers")
        o = PyDict_GetItem(self._topics, topic) if type(topic) is str else NULL
        tq = <_TopicQueue>o if o != NULL else self._topic_queue(topic)
        ts = _client_timestamp(timestamp_ms)
        vcol = _Column.wrap(values, "values")
        n = vcol.n
        keyed = keys is not None
        if keyed:
            kcol = _Column.wrap(keys, "keys")
            if kcol.n != n:
                raise ValueError(f"{kcol.n} keys for {n} values")
        else:
            kcol = _Column.empty(n)
        if partition is not None:
            fixed_p = _client_partition(partition, tq.num_partitions, tq.name)
        nparts = tq.num_partitions
        parts_arr = _broker_np.empty(n, dtype=_broker_np.int32)
        parts = parts_arr
        ids_arr = _broker_np.empty(n, dtype=_broker_np.int32)
        ids = ids_arr
        rel_arr = _broker_np.empty(n, dtype=_broker_np.int32)
        rel = rel_arr
        # Pass 1: sizes, types and partitions of every record, before anything is queued.
        max_size = tq.max_record_bytes - BATCH_HEADER_SIZE
        for i in range(n):
            vn = vcol.length(i)
            kn = kcol.length(i)
            size = RECORD_MAX_OVERHEAD + (kn if kn > 0 else 0) + (vn if vn > 0 else 0)
            if size > max_size:
                raise RecordTooLargeError(
                    f"record {i} of about {size + BATCH_HEADER_SIZE} bytes does not fit a batch of at most "
                    f"{tq.max_record_bytes} bytes")
            total += size
            if fixed_p >= 0:
                parts[i] = fixed_p
            elif kn >= 0 and self._pkind == PART_DEFAULT:
                parts[i] = _broker_key_partition(<const uint8_t *>kcol.ptr(i), kn, nparts)
            elif self._pkind == PART_CUSTOM:
                parts[i] = _client_partition(self._partitioner.partition(
                    tq.name, kcol.item(i), kcol.item(i), nparts, None), nparts, tq.name)
            else:
                parts[i] = -1
        fut = BatchSendFuture.__new__(BatchSendFuture)
        fut.core = self
        fut.partitions = parts_arr
        fut.batch_ids = ids_arr
        fut.rel = rel_arr
        fut.timestamp = ts
        cur_batch = [None] * nparts      # partition -> the batch its records go to now
        cur_ids = <int32_t *>PyMem_Malloc(nparts * sizeof(int32_t))
        if cur_ids == NULL:
            raise MemoryError()
        try:
            self._send_batch_chunks(tq, vcol, kcol, n, parts, ids, rel, ts, batches, cur_batch, cur_ids, fut)
        finally:
            PyMem_Free(cur_ids)
        if n == 0:
            fut.batches = []
            fut.pending = 0
            fut.offsets = _broker_np.empty(0, dtype=_broker_np.int64)
        return fut

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _send_batch_chunks(self, _TopicQueue tq, _Column vcol, _Column kcol, Py_ssize_t n,
                                int32_t[::1] parts, int32_t[::1] ids, int32_t[::1] rel, int64_t ts,
                                list batches, list cur_batch, int32_t *cur_ids,
                                BatchSendFuture fut) except -1:
        """send_batch's pass 2: write every record into its partition's batch, in chunks
        that fit buffer_memory, holding the lock per chunk."""
        cdef Py_ssize_t i, size, chunk_start, chunk_end, chunk_bytes, kn, vn
        cdef int32_t p
        cdef _PartitionQueue pq
        cdef _PartitionQueue sticky = None
        cdef _ProducerBatch b
        cdef RecordBatchBuilder builder
        cdef uint8_t *out
        cdef bint wake = False
        cdef Py_ssize_t batch_size = self._batch_size
        chunk_start = 0
        while chunk_start < n:
            chunk_end = chunk_start
            chunk_bytes = 0
            while chunk_end < n:
                size = RECORD_MAX_OVERHEAD + max(kcol.length(chunk_end), 0) + max(vcol.length(chunk_end), 0)
                if chunk_end > chunk_start and chunk_bytes + size > self._buffer_memory // 2:
                    break
                chunk_bytes += size
                chunk_end += 1
            if self._buffered + chunk_bytes > self._buffer_memory and self._buffered > 0:
                self._wait_for_memory(chunk_bytes)
            _client_lock(self._lock)
            try:
                if self._closed:
                    raise IllegalStateError("the producer was closed during send_batch")
                if chunk_start == 0:
                    for p in range(len(cur_batch)):
                        cur_ids[p] = -1
                sticky = None
                for i in range(chunk_start, chunk_end):
                    kn = kcol.length(i)
                    vn = vcol.length(i)
                    size = RECORD_MAX_OVERHEAD + (kn if kn > 0 else 0) + (vn if vn > 0 else 0)
                    p = parts[i]
                    if p < 0:
                        # Keyless: the sticky partition, looked up again only when its batch fills.
                        if sticky is None or sticky.open is None or (
                                sticky.open.builder.count > 0 and sticky.open.builder.length + size > batch_size):
                            sticky = self._sticky_queue(tq, size, <int32_t>len(cur_batch))
                        pq = sticky
                        p = pq.partition
                        parts[i] = p
                    else:
                        pq = <_PartitionQueue>PyList_GET_ITEM(tq.parts, p)
                    b = pq.open
                    if b is None or (b.builder.count > 0 and b.builder.length + size > batch_size):
                        b = self._open_batch(pq, pylog_now_ms())
                    if PyList_GET_ITEM(cur_batch, p) != <PyObject *>b:
                        cur_ids[p] = <int32_t>len(batches)
                        batches.append(b)
                        cur_batch[p] = b
                    builder = b.builder
                    builder._reserve(size)
                    builder._start_record(ts)
                    out = builder._write_record(builder.buf + builder.length, ts, kcol.ptr(i), kn,
                                                vcol.ptr(i), vn, 0, 0)
                    builder.length = out - builder.buf
                    ids[i] = cur_ids[p]
                    rel[i] = builder.count
                    builder.count += 1
                    b.reserved += size
                    self._buffered += size
                if chunk_end == n:
                    # Register for completion before any of these batches can complete
                    # (completion takes this lock).
                    fut.batches = batches
                    fut.pending = len(batches)
                    for b in batches:
                        if b.listeners is None:
                            b.listeners = []
                        b.listeners.append(fut)
                if self._sender_state == SENDER_IDLE or (
                        self._sender_state == SENDER_TIMED and self._ready_bytes >= self._wake_bytes):
                    self._sender_state = SENDER_RUNNING
                    wake = True
            finally:
                _client_unlock(self._lock)
            if wake:
                self._wake_sender()
                wake = False
            chunk_start = chunk_end
        return 0

    # -- the sender's side

    def _next_delay(self, int64_t now_ms, bint idle_ok=True):
        """Milliseconds until the sender has work: 0 now, -1 nothing buffered.  Atomically
        records whether the sender sleeps idle or until a deadline, so a send() that
        needs it wakes it."""
        cdef _PartitionQueue pq
        cdef int64_t delay = -1, d
        cdef _ProducerBatch b
        _client_lock(self._lock)
        for pq in self._queues:
            d = -1
            if len(pq.ready):
                d = 0
            elif pq.open is not None and pq.open.builder.count > 0:
                d = pq.open.created_ms + self._linger_ms - now_ms
                if d < 0:
                    d = 0
            if d >= 0 and pq.blocked_until > now_ms:
                d = max(d, pq.blocked_until - now_ms)
            if d >= 0 and (delay < 0 or d < delay):
                delay = d
                if delay == 0:
                    break
        if delay == 0:
            self._sender_state = SENDER_RUNNING
        elif delay < 0:
            self._sender_state = SENDER_IDLE
        else:
            self._sender_state = SENDER_TIMED
        _client_unlock(self._lock)
        return delay

    def _drain(self, int64_t now_ms, bint force, Py_ssize_t max_bytes, Py_ssize_t max_batches=5):
        """Batches to send now: close open batches whose linger passed (all with
        ``force``), then take ready batches, oldest first, up to ``max_bytes`` and
        ``max_batches`` per partition (the broker recognises retried duplicates among a
        producer's last 5 batches only: a retried append must not hold more), from
        partitions not backing off.  Returns a list of
        (topic, partition, [batches]); :meth:`_prepare` numbers and builds them."""
        cdef _PartitionQueue pq
        cdef _ProducerBatch b
        cdef list out = [], taken
        cdef Py_ssize_t nbytes, size
        _client_lock(self._lock)
        try:
            for pq in self._queues:
                if pq.blocked_until > now_ms:
                    continue
                b = pq.open
                if b is not None and b.builder.count > 0 and (force or now_ms - b.created_ms >= self._linger_ms):
                    self._close_open(pq)
                if not len(pq.ready):
                    continue
                taken = []
                nbytes = 0
                while len(pq.ready):
                    b = <_ProducerBatch>pq.ready[0]
                    size = b.builder.length if b.data is None else len(b.data)
                    if taken and (nbytes + size > max_bytes or len(taken) >= max_batches):
                        break
                    if b.state == PB_CLOSED:
                        self._ready_bytes -= b.builder.length
                        b.state = PB_SENDING
                    pq.ready.popleft()
                    nbytes += size
                    taken.append(b)
                out.append((pq.topic, pq.partition, taken))
        finally:
            _client_unlock(self._lock)
        return out

    def _prepare(self, list batches):
        """Number (idempotent producer) and build the batches about to be sent, in order,
        and return their bytes.  A batch gets the next sequence of its partition when it
        has none yet, or was numbered under an older producer id or epoch (its bytes are
        then patched: producer fields and CRC).  A retried batch keeps its number, so the
        broker recognises it if it was appended after all."""
        cdef _ProducerBatch b
        cdef _PartitionQueue pq
        cdef list out = []
        _client_lock(self._lock)
        try:
            for b in batches:
                pq = b.queue
                if self._idempotent and (b.base_sequence < 0 or b.seq_producer_id != self._producer_id
                                         or b.seq_epoch != self._producer_epoch):
                    b.base_sequence = pq.next_sequence
                    pq.next_sequence = <int32_t>((<int64_t>pq.next_sequence + b.record_count) % 2147483648)
                    b.seq_producer_id = self._producer_id
                    b.seq_epoch = self._producer_epoch
                    if b.data is not None:
                        b._renumber(self._producer_id, self._producer_epoch, b.base_sequence)
                if b.data is None:
                    b._build()
                out.append(b.data)
        finally:
            _client_unlock(self._lock)
        return out

    def _rewind(self, list batches):
        """``batches[0]`` failed for good and was not appended: its partition's next
        sequence goes back to that batch's, and the batches after it (numbered after it,
        so rejected as out of order) are renumbered when sent again."""
        cdef _ProducerBatch first, b
        if not batches or not self._idempotent:
            return
        _client_lock(self._lock)
        try:
            first = <_ProducerBatch>batches[0]
            if (first.base_sequence >= 0 and first.seq_producer_id == self._producer_id
                    and first.seq_epoch == self._producer_epoch):
                first.queue.next_sequence = first.base_sequence
            for b in batches[1:]:
                b.base_sequence = -1
        finally:
            _client_unlock(self._lock)

    def _requeue(self, str topic, int32_t partition, list batches, int64_t retry_at_ms):
        """Put batches that must be retried back at the head of their queue, in order,
        and hold the partition until ``retry_at_ms`` (ordering is kept: nothing of the
        partition goes before them)."""
        cdef _TopicQueue tq
        cdef _PartitionQueue pq = None
        _client_lock(self._lock)
        try:
            for q in self._queues:
                if (<_PartitionQueue>q).topic == topic and (<_PartitionQueue>q).partition == partition:
                    pq = <_PartitionQueue>q
                    break
            if pq is None:
                raise UnknownTopicOrPartitionError(f"{topic}-{partition}")
            for b in reversed(batches):
                pq.ready.appendleft(b)
            pq.blocked_until = retry_at_ms
        finally:
            _client_unlock(self._lock)

    def _close_for_flush(self):
        """Close every open batch (so the sender sends them now); returns every batch
        not yet done."""
        cdef _PartitionQueue pq
        _client_lock(self._lock)
        try:
            for pq in self._queues:
                b = pq.open
                if b is not None and (<_ProducerBatch>b).builder.count > 0:
                    self._close_open(pq)
            self._sender_state = SENDER_RUNNING
            return list(self._incomplete)
        finally:
            _client_unlock(self._lock)

    def _close_batch(self, _ProducerBatch batch):
        """Close ``batch`` if it is still open (someone waits for it)."""
        cdef _PartitionQueue pq = batch.queue
        _client_lock(self._lock)
        try:
            if pq.open is batch and batch.builder.count > 0:
                self._close_open(pq)
            self._sender_state = SENDER_RUNNING
        finally:
            _client_unlock(self._lock)

    def _mark_closed(self):
        """No more sends (close() is draining what is queued)."""
        self._closed = True

    def _abort_all(self, error):
        """Fail every batch not yet done with ``error`` (close(timeout=0), fatal errors)."""
        cdef _PartitionQueue pq
        _client_lock(self._lock)
        try:
            for pq in self._queues:
                if pq.open is not None:
                    self._close_open(pq)
                pq.ready.clear()
            pending = list(self._incomplete)
        finally:
            _client_unlock(self._lock)
        for b in pending:
            (<_ProducerBatch>b).fail(error)

    def _incomplete_count(self):
        return len(self._incomplete)


# ---------------------------------------------------------------------------------------
# A column of keys or values for send_batch: a sequence of bytes/None, a 2-D uint8 array
# or a fixed-width bytes array.

@cython.final
cdef class _Column:
    cdef Py_ssize_t n
    cdef object keep                 # what keeps the memory alive
    cdef PyObject **items            # sequence form
    cdef const char *base            # array forms
    cdef Py_ssize_t width
    cdef bint null                   # every item null (no keys)

    @staticmethod
    cdef _Column wrap(object data, str what):
        cdef _Column c = _Column.__new__(_Column)
        cdef Py_ssize_t i
        cdef PyObject *o
        if isinstance(data, cnp.ndarray) and (<cnp.ndarray>data).dtype.num != cnp.NPY_OBJECT:
            arr = data
            if arr.ndim == 2 and arr.dtype == _broker_np.uint8:
                arr = _broker_np.ascontiguousarray(arr)
                c.n = arr.shape[0]
                c.width = arr.shape[1]
            elif arr.ndim == 1 and arr.dtype.kind in ("S", "V"):
                arr = _broker_np.ascontiguousarray(arr)
                c.n = arr.shape[0]
                c.width = arr.dtype.itemsize
            else:
                raise RecordTypeError(
                    f"{what} array must be 2-D uint8 (one row per record) or fixed-width bytes "
                    f"(dtype S<n> or V<n>), not {arr.ndim}-D {arr.dtype}")
            c.keep = arr
            c.base = <const char *>cnp.PyArray_DATA(<cnp.ndarray>arr)
            return c
        if isinstance(data, (str, bytes, bytearray, memoryview)):
            raise RecordTypeError(f"{what} must be a sequence of bytes (one per record), not {type(data).__name__}")
        try:
            seq = PySequence_Fast(data, b"expected a sequence of bytes or a numpy array")
        except TypeError:
            raise RecordTypeError(f"{what} must be a sequence of bytes or a numpy array, "
                                  f"not {type(data).__name__}") from None
        c.keep = seq
        c.n = PySequence_Fast_GET_SIZE(seq)
        c.items = PySequence_Fast_ITEMS(seq)
        for i in range(c.n):
            o = c.items[i]
            if o != <PyObject *>None and not PyBytes_CheckExact(<object>o):
                raise RecordTypeError(f"{what}[{i}] must be bytes or None, not {type(<object>o).__name__}")
        return c

    @staticmethod
    cdef _Column empty(Py_ssize_t n):
        cdef _Column c = _Column.__new__(_Column)
        c.n = n
        c.null = True
        return c

    cdef inline Py_ssize_t length(self, Py_ssize_t i) noexcept:
        cdef PyObject *o
        if self.null:
            return -1
        if self.items != NULL:
            o = self.items[i]
            return -1 if o == <PyObject *>None else PyBytes_GET_SIZE(<object>o)
        return self.width

    cdef inline const char *ptr(self, Py_ssize_t i) noexcept:
        cdef PyObject *o
        if self.null:
            return NULL
        if self.items != NULL:
            o = self.items[i]
            return NULL if o == <PyObject *>None else PyBytes_AS_STRING(<object>o)
        return self.base + i * self.width

    cdef object item(self, Py_ssize_t i):
        if self.null:
            return None
        if self.items != NULL:
            return <object>self.items[i]
        return PyBytes_FromStringAndSize(self.base + i * self.width, self.width)


# ---------------------------------------------------------------------------------------
# Consumer records

@cython.final
@cython.freelist(512)
@cython.no_gc
cdef class ConsumerRecord:
    """One record as a consumer's ``poll()`` returns it.

    Attributes
    ----------
    topic : str
    partition : int
    offset : int
    timestamp : int
        ms since the epoch; see ``timestamp_type``.
    timestamp_type : int
        0 CreateTime, 1 LogAppendTime.
    key, value
        bytes or None, or what the consumer's deserializers made of them.
    headers : tuple of (str, bytes or None)
    leader_epoch : int
    serialized_key_size, serialized_value_size : int
        -1 for null.
    """
    # topic .. headers are exposed as read-only member descriptors (fast attribute
    # loads, as for Record): see _client_expose_consumer_record below.
    cdef object topic
    cdef object partition
    cdef object offset
    cdef object timestamp
    cdef object key
    cdef object value
    cdef object headers
    cdef int _timestamp_type
    cdef int32_t _leader_epoch
    cdef int32_t _key_size
    cdef int32_t _value_size

    def __init__(self, topic, partition, offset, timestamp, timestamp_type=0, key=None, value=None,
                 headers=(), leader_epoch=-1, serialized_key_size=-1, serialized_value_size=-1):
        self.topic = topic
        self.partition = int(partition)
        self.offset = int(offset)
        self.timestamp = int(timestamp)
        self._timestamp_type = timestamp_type
        self.key = key
        self.value = value
        self.headers = tuple(headers)
        self._leader_epoch = leader_epoch
        self._key_size = serialized_key_size
        self._value_size = serialized_value_size

    @property
    def timestamp_type(self):
        return self._timestamp_type

    @property
    def leader_epoch(self):
        return self._leader_epoch

    @property
    def serialized_key_size(self):
        return self._key_size

    @property
    def serialized_value_size(self):
        return self._value_size

    def __repr__(self):
        return (f"ConsumerRecord(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
                f"timestamp={self.timestamp}, key={self.key!r}, value={self.value!r}, headers={self.headers!r})")

    def __eq__(self, other):
        if not isinstance(other, ConsumerRecord):
            return NotImplemented
        cdef ConsumerRecord o = <ConsumerRecord>other
        return (self.topic == o.topic and self.partition == o.partition and self.offset == o.offset
                and self.timestamp == o.timestamp and self.key == o.key and self.value == o.value
                and self.headers == o.headers)

    def __hash__(self):
        return hash((self.topic, self.partition, self.offset))

    def __reduce__(self):
        return (ConsumerRecord, (self.topic, self.partition, self.offset, self.timestamp,
                                 self._timestamp_type, self.key, self.value, self.headers,
                                 self._leader_epoch, self._key_size, self._value_size))


cdef extern from *:
    """
    static PyMemberDef pylog_consumer_record_members[7];
    static int pylog_expose_consumer_record(PyTypeObject *t, const char **names, const char **docs,
                                            const Py_ssize_t *offsets, int n) {
        int i;
        for (i = 0; i < n && i < 7; i++) {
            PyObject *d;
            pylog_consumer_record_members[i].name = names[i];
            pylog_consumer_record_members[i].type = T_OBJECT_EX;
            pylog_consumer_record_members[i].offset = offsets[i];
            pylog_consumer_record_members[i].flags = READONLY;
            pylog_consumer_record_members[i].doc = docs[i];
            d = PyDescr_NewMember(t, &pylog_consumer_record_members[i]);
            if (d == NULL) return -1;
            if (PyDict_SetItemString(t->tp_dict, names[i], d) < 0) { Py_DECREF(d); return -1; }
            Py_DECREF(d);
        }
        PyType_Modified(t);
        return 0;
    }
    """
    int pylog_expose_consumer_record(type t, const char **names, const char **docs,
                                     const Py_ssize_t *offsets, int n) except -1


cdef int _client_expose_consumer_record() except -1:
    cdef ConsumerRecord r = ConsumerRecord.__new__(ConsumerRecord)
    cdef const char *names[7]
    cdef const char *docs[7]
    cdef Py_ssize_t offsets[7]
    cdef int i
    names[0] = b"topic"
    names[1] = b"partition"
    names[2] = b"offset"
    names[3] = b"timestamp"
    names[4] = b"key"
    names[5] = b"value"
    names[6] = b"headers"
    docs[0] = b"Topic (str)."
    docs[1] = b"Partition (int)."
    docs[2] = b"Offset (int)."
    docs[3] = b"Timestamp in ms since the epoch (int)."
    docs[4] = b"Key: bytes or None, or what the key deserializer returned."
    docs[5] = b"Value: bytes or None, or what the value deserializer returned."
    docs[6] = b"Headers: tuple of (str, bytes or None) pairs."
    markers = [object() for _ in range(7)]
    r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers = markers
    for i in range(7):
        offsets[i] = pylog_find_field(r, markers[i])
        if offsets[i] < 0:
            raise ImportError("pylog._core: cannot lay out ConsumerRecord's fields")
    return pylog_expose_consumer_record(ConsumerRecord, names, docs, offsets, 7)


_client_expose_consumer_record()


def decode_fetched(buffer, str topic, partition, int64_t start_offset, list out, *,
                   bint check_crc=True, key_deserializer=None, value_deserializer=None):
    """Decode the batches of a fetch into :class:`ConsumerRecord` objects appended to
    ``out``: records at or after ``start_offset``, control batches skipped.

    Returns
    -------
    (next_offset, failure)
        ``next_offset``: where the next fetch starts (after the last record decoded or
        batch skipped).  ``failure``: None, or, when a deserializer raised, the tuple
        ``(offset, timestamp, timestamp_type, key, value, headers, leader_epoch, exc)`` of
        that record (raw bytes), which is not in ``out``; ``next_offset`` is then its offset.

    Raises
    ------
    CorruptRecordError
        A batch fails its CRC or a record is malformed (the message names the partition and
        offset).
    """
    cdef _BufferRef ref = acquire_buffer(buffer)
    cdef const uint8_t *base = <const uint8_t *>ref.view.buf
    cdef Py_ssize_t pos = 0, end = ref.view.len
    cdef BatchHeader h
    cdef BatchStatus st
    cdef RecordFields f
    cdef RecordStatus rst
    cdef int64_t next_offset = start_offset, last, offset, ts
    cdef const uint8_t *rp
    cdef const uint8_t *rend
    cdef int32_t i, prev, codec, tstype
    cdef ConsumerRecord rec
    cdef object section, raw_key, raw_value
    cdef bint log_append
    partition = int(partition)
    while pos < end:
        st = parse_batch_header(base + pos, end - pos, INT32_MAX, check_crc, &h)
        if st == BATCH_TRUNCATED_HEADER or st == BATCH_TRUNCATED_BODY:
            break
        if st != BATCH_OK:
            raise CorruptRecordError(
                f"{topic}-{partition}: {_STATUS_MESSAGES[st]} in the batch at offset {h.base_offset}")
        last = h.base_offset + h.last_offset_delta
        if last < next_offset or (h.attributes & ATTR_CONTROL):
            if last >= next_offset:
                next_offset = last + 1
            pos += h.size
            continue
        codec = h.attributes & ATTR_CODEC_MASK
        if codec == 0:
            rp = base + pos + BATCH_HEADER_SIZE
            rend = base + pos + h.size
        else:
            if codec > 4:
                raise CorruptRecordError(
                    f"{topic}-{partition}: batch at offset {h.base_offset} names unknown codec {codec}")
            section = _codecs.decompress(codec, PyMemoryView_FromMemory(
                <char *>base + pos + BATCH_HEADER_SIZE, h.size - BATCH_HEADER_SIZE, PyBUF_READ), None)
            if not PyBytes_CheckExact(section):
                section = bytes(section)
            rp = <const uint8_t *>PyBytes_AS_STRING(section)
            rend = rp + PyBytes_GET_SIZE(section)
        log_append = (h.attributes & ATTR_LOG_APPEND_TIME) != 0
        tstype = 1 if log_append else 0
        prev = -1
        if h.records_count > (rend - rp) // RECORD_MIN_SIZE:
            raise CorruptRecordError(f"{topic}-{partition}: batch at offset {h.base_offset}: "
                                     f"{_RECORD_MESSAGES[RECORD_BAD_COUNT]}")
        for i in range(h.records_count):
            rst = read_record(rp, rend, &f)
            if rst == RECORD_OK and (f.offset_delta <= prev or f.offset_delta > h.last_offset_delta):
                rst = RECORD_BAD_OFFSET
            if rst != RECORD_OK:
                raise CorruptRecordError(
                    f"{topic}-{partition}: {_RECORD_MESSAGES[rst]} (record {i} of the batch at offset {h.base_offset})")
            prev = f.offset_delta
            rp = f.end
            offset = h.base_offset + f.offset_delta
            if offset < next_offset:
                continue
            ts = h.max_timestamp if log_append else <int64_t>(<uint64_t>h.base_timestamp + <uint64_t>f.timestamp_delta)
            rec = ConsumerRecord.__new__(ConsumerRecord)
            rec.topic = topic
            rec.partition = partition
            rec.offset = offset
            rec.timestamp = ts
            rec._timestamp_type = tstype
            rec._leader_epoch = h.leader_epoch
            rec._key_size = f.key_length
            rec._value_size = f.value_length
            rec.headers = EMPTY_HEADERS if f.header_count == 0 else decode_headers(f.headers, f.end, f.header_count)
            raw_key = bytes_or_none(f.key, f.key_length)
            raw_value = bytes_or_none(f.value, f.value_length)
            if key_deserializer is None and value_deserializer is None:
                rec.key = raw_key
                rec.value = raw_value
            else:
                try:
                    rec.key = raw_key if key_deserializer is None else key_deserializer(raw_key)
                    rec.value = raw_value if value_deserializer is None else value_deserializer(raw_value)
                except Exception as exc:
                    return offset, (offset, ts, tstype, raw_key, raw_value, rec.headers, h.leader_epoch, exc)
            out.append(rec)
            next_offset = offset + 1
        next_offset = last + 1
        pos += h.size
    return next_offset, None
