# Part of pylog._core (included by _core.pyx): the embedded client's per-record paths.
#
# Producer: _ProducerCore.send() writes a record straight into the RecordBatchBuilder of
# its partition's open batch (partitioning by murmur2 in C, no intermediate objects) and
# returns a FutureRecordMetadata, a small object holding the batch and the record's index,
# resolved when the batch is appended.  send_batch() checks, sizes and partitions a whole
# column of records in one pass, tops up open batches as send() would, and writes longer
# runs into batches of its own without the GIL or the lock (keyed records in one in-order
# pass, one batch per partition at a time), checksumming the records as they are written
# (the CRC32C of the header is joined to it at drain time, when the producer id, epoch
# and sequence are known); each batch is queued as it fills, so the sender's appends
# overlap the writing of the next.  The sender thread (pylog.client.producer) drains
# closed batches through _drain / _ProducerBatch.complete; an uncompressed batch is handed
# to the broker as a view of its builder, which returns to the pool when the last view
# is released.  A batch the broker refused as too large is split (_ProducerCore._split)
# into new batches that take its place and sequence range; it completes when they all
# have, and its handles and bulk sends then read their records' parts.
#
# Consumer: decode_fetched() turns fetched batches into ConsumerRecord objects in one C
# loop, with optional deserializers, stopping at the first record a deserializer rejects.
#
# Threads: the accumulator's state (open batches, ready queues, memory count, sequence
# numbers) is guarded by one PyThread lock taken by every method that touches it; no
# Python code runs while it is held except the partitioner's on_new_batch (a C method of
# the built-in partitioners).  Batch completion callbacks run in the completing thread.
# send_batch's GIL-free loops read only objects it holds a reference to (a tuple, the
# snapshot of a list, an array) and write only batches no other thread can see yet.
cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.pythread cimport (PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_release_lock, PyThread_type_lock)

import asyncio as _client_asyncio
import collections as _client_collections
import logging as _client_logging
import time as _client_time

from pylog.errors import (IllegalStateError, InvalidTimestampError, RecordTypeError, RequestTimedOutError,
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


@cython.boundscheck(False)
@cython.wraparound(False)
cdef object _client_timestamps(object timestamps, Py_ssize_t n):
    """send_batch's per-record timestamps as a contiguous int64 array of ``n``, checked.
    A list (or tuple) of ints is read in one C loop (numpy's conversion of a list costs
    about as much as writing the records); anything else goes through numpy."""
    cdef Py_ssize_t i
    cdef int64_t *out
    cdef list items
    if type(timestamps) is list or type(timestamps) is tuple:
        items = <list>timestamps if type(timestamps) is list else list(timestamps)
        if len(items) != n:
            raise ValueError(f"{len(items)} timestamps for {n} values")
        arr = _np().empty(n, dtype=_np().int64)
        out = <int64_t *>pylog_array_data(arr)
        try:
            for i in range(n):
                x = items[i]
                if type(x) is not int:
                    break       # numpy says what it is below
                out[i] = x
                if out[i] < 0:
                    raise InvalidTimestampError(f"timestamp_ms must be >= 0 (ms since the epoch), got {x}")
            else:
                return arr
        except OverflowError:
            raise InvalidTimestampError(f"timestamp_ms holds {items[i]}, more than an int64") from None
    try:
        arr = _np().asarray(timestamps)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidTimestampError(f"timestamp_ms must be an int, None or a sequence of ints: {exc}") from None
    if arr.ndim != 1:
        raise InvalidTimestampError(f"timestamp_ms must be an int, None or a 1-D sequence of ints, not {arr.ndim}-D")
    if len(arr) != n:
        raise ValueError(f"{len(arr)} timestamps for {n} values")
    if n == 0:
        return _np().empty(0, dtype=_np().int64)
    if arr.dtype.kind not in "iu":
        raise InvalidTimestampError(f"timestamp_ms must hold ints (ms since the epoch), not {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and int(arr.max()) > INT64_MAX:
        raise InvalidTimestampError(f"timestamp_ms holds {int(arr.max())}, more than an int64")
    arr = _np().ascontiguousarray(arr, dtype=_np().int64)
    if int(arr.min()) < 0:
        raise InvalidTimestampError(f"timestamp_ms must be >= 0 (ms since the epoch), got {int(arr.min())}")
    return arr


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
# Bulk send helpers: columns read without the GIL, the record writer, and the CRC32C
# combination that lets a batch's records section be checksummed once, where it is
# written, before its header (producer id, epoch, sequence) is known.

cdef extern from *:
    """
    /* CRC32C (Castagnoli, reflected 0x82F63B78) of A||B from crc(A), crc(B) and |B|,
     * as zlib's crc32_combine: multiply crc(A) by x^(8|B|) modulo the polynomial. */
    static uint32_t pylog_client_x2n[32];
    static uint32_t pylog_client_multmodp(uint32_t a, uint32_t b) {
        uint32_t m = (uint32_t)1 << 31, p = 0;
        for (;;) {
            if (a & m) {
                p ^= b;
                if ((a & (m - 1)) == 0) break;
            }
            m >>= 1;
            b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1;
        }
        return p;
    }
    static void pylog_client_crc_init(void) {
        int k;
        uint32_t p = (uint32_t)1 << 30;   /* x^1 */
        pylog_client_x2n[0] = p;
        for (k = 1; k < 32; k++) pylog_client_x2n[k] = p = pylog_client_multmodp(p, p);
    }
    static uint32_t pylog_client_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
        uint32_t x = (uint32_t)1 << 31;   /* x^0 */
        unsigned k = 3;                   /* x^(8 len) = product of x^(2^(k)) over set bits */
        while (len_b) {
            if (len_b & 1) x = pylog_client_multmodp(pylog_client_x2n[k & 31], x);
            len_b >>= 1;
            k++;
        }
        return pylog_client_multmodp(x, crc_a) ^ crc_b;
    }
    #define pylog_client_bytes_size(o) PyBytes_GET_SIZE(o)
    #define pylog_client_bytes_str(o) PyBytes_AS_STRING(o)
    #if defined(__GNUC__) || defined(__clang__)
    #define pylog_client_prefetch(p) __builtin_prefetch((const void *)(p))
    /* Bytes of the zigzag varint of v: one per 7 significant bits. */
    static inline int pylog_client_varint_size(int64_t v) {
        uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        return (70 - __builtin_clzll(u | 1)) / 7;
    }
    /* Kafka's partition of a key: toPositive(murmur2) % n, the modulo by a multiply
     * (Lemire's fastmod: exact for 32-bit operands; m = 2**64 / n rounded up). */
    static inline uint64_t pylog_client_fastmod_m(uint32_t n) { return UINT64_C(0xFFFFFFFFFFFFFFFF) / n + 1; }
    static inline uint32_t pylog_client_fastmod(uint32_t a, uint64_t m, uint32_t n) {
        return (uint32_t)(((__uint128_t)(m * a) * n) >> 64);
    }
    #else
    static inline uint64_t pylog_client_fastmod_m(uint32_t n) { return n; }
    static inline uint32_t pylog_client_fastmod(uint32_t a, uint64_t m, uint32_t n) { return a % n; }
    #define pylog_client_prefetch(p) ((void)0)
    static inline int pylog_client_varint_size(int64_t v) {
        uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        int n = 1;
        while (u >= 0x80) { u >>= 7; n++; }
        return n;
    }
    #endif
    /* Zigzag varints of int32 values (lengths, offset deltas): sizes by comparison. */
    static inline int pylog_client_varint32_size(int32_t v) {
        uint32_t u = ((uint32_t)v << 1) ^ (uint32_t)(v >> 31);
        return u < 0x80 ? 1 : u < 0x4000 ? 2 : u < 0x200000 ? 3 : u < 0x10000000 ? 4 : 5;
    }
    static inline uint8_t *pylog_client_put_varint32(uint8_t *p, int32_t v) {
        uint32_t u = ((uint32_t)v << 1) ^ (uint32_t)(v >> 31);
        if (u < 0x80) { p[0] = (uint8_t)u; return p + 1; }          /* the usual sizes: */
        if (u < 0x4000) { p[0] = (uint8_t)(u | 0x80); p[1] = (uint8_t)(u >> 7); return p + 2; }
        while (u >= 0x80) { *p++ = (uint8_t)(u | 0x80); u >>= 7; }
        *p++ = (uint8_t)u;
        return p;
    }
    /* A short copy without a library call: overlapping fixed-size moves. */
    static inline void pylog_client_copy(uint8_t *d, const uint8_t *s, size_t n) {
        if (n <= 16) {
            if (n >= 8) {
                uint64_t a, b;
                memcpy(&a, s, 8); memcpy(&b, s + n - 8, 8);
                memcpy(d, &a, 8); memcpy(d + n - 8, &b, 8);
            } else if (n >= 4) {
                uint32_t a, b;
                memcpy(&a, s, 4); memcpy(&b, s + n - 4, 4);
                memcpy(d, &a, 4); memcpy(d + n - 4, &b, 4);
            } else if (n > 0) {
                d[0] = s[0]; d[n / 2] = s[n / 2]; d[n - 1] = s[n - 1];
            }
        } else if (n <= 32) {
            uint8_t a[16], b[16];
            memcpy(a, s, 16); memcpy(b, s + n - 16, 16);
            memcpy(d, a, 16); memcpy(d + n - 16, b, 16);
        } else if (n <= 256) {
            uint8_t t[32];
            size_t i = 0;
            for (; i + 32 <= n; i += 32) memcpy(d + i, s + i, 32);
            if (i < n) { memcpy(t, s + n - 32, 32); memcpy(d + n - 32, t, 32); }
        } else {
            memcpy(d, s, n);
        }
    }
    """
    void pylog_client_crc_init() noexcept nogil
    uint32_t pylog_client_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) noexcept nogil
    Py_ssize_t pylog_client_bytes_size(PyObject *o) noexcept nogil
    const char *pylog_client_bytes_str(PyObject *o) noexcept nogil
    void pylog_client_incref "Py_INCREF"(PyObject *o) noexcept
    void pylog_client_prefetch(const void *p) noexcept nogil
    int pylog_client_varint_size(int64_t v) noexcept nogil
    uint64_t pylog_client_fastmod_m(uint32_t n) noexcept nogil
    uint32_t pylog_client_fastmod(uint32_t a, uint64_t m, uint32_t n) noexcept nogil
    int pylog_client_varint32_size(int32_t v) noexcept nogil
    uint8_t *pylog_client_put_varint32(uint8_t *p, int32_t v) noexcept nogil
    void pylog_client_copy(uint8_t *d, const uint8_t *s, size_t n) noexcept nogil
    void pylog_client_decref "Py_DECREF"(PyObject *o) noexcept

pylog_client_crc_init()


def _crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b):
    """CRC32C of A + B from ``crc32c(A)``, ``crc32c(B)`` and ``len(B)`` (for tests)."""
    return pylog_client_crc32c_combine(crc_a, crc_b, len_b)


cdef enum:
    PREFETCH_AHEAD = 8       # records: how far ahead the bulk loops start loading items
    RELEASE_STEP = 4096      # records: how often the bulk loops drop a list snapshot's
                             # references (while the items are still in L2, not at the end
                             # of a 1 MiB batch, when a decref is a cache miss each)


cdef struct _ColC:
    # A column of keys or values as send_batch's GIL-free loops read it: the items of a
    # tuple or of a list snapshot (each bytes or None, kept alive by a reference), rows
    # of a numpy array, or (keys given as a sequence) copies packed in one buffer.
    PyObject **items
    PyObject *none
    const char *base
    Py_ssize_t width
    const int32_t *lens           # packed copies: length of item i (-1: None) ...
    const int64_t *offs           # ... and where it starts in base
    bint null


cdef inline Py_ssize_t _col_len(const _ColC *c, Py_ssize_t i) noexcept nogil:
    cdef PyObject *o
    if c.null:
        return -1
    if c.lens != NULL:
        return c.lens[i]
    if c.items != NULL:
        o = c.items[i]
        return -1 if o == c.none else pylog_client_bytes_size(o)
    return c.width


cdef inline const char *_col_ptr(const _ColC *c, Py_ssize_t i) noexcept nogil:
    cdef PyObject *o
    if c.null:
        return NULL
    if c.lens != NULL:
        return NULL if c.lens[i] < 0 else c.base + c.offs[i]
    if c.items != NULL:
        o = c.items[i]
        return NULL if o == c.none else pylog_client_bytes_str(o)
    return c.base + i * c.width


cdef inline void _col_prefetch(const _ColC *c, Py_ssize_t i) noexcept nogil:
    """Start loading item i of a tuple/list column (its header and first 128 bytes):
    the items are separate objects, which the hardware prefetcher does not follow."""
    cdef const char *o
    if c.items != NULL and c.lens == NULL:
        o = <const char *>c.items[i]
        pylog_client_prefetch(o)
        pylog_client_prefetch(o + 64)
        pylog_client_prefetch(o + 128)


cdef inline Py_ssize_t _col_bound(const _ColC *k, const _ColC *v, Py_ssize_t i) noexcept nogil:
    """The most bytes record i can take in a batch (what buffer_memory counts)."""
    cdef Py_ssize_t kn = _col_len(k, i), vn = _col_len(v, i)
    return RECORD_MAX_OVERHEAD + (kn if kn > 0 else 0) + (vn if vn > 0 else 0)


cdef inline Py_ssize_t _client_put(uint8_t *buf, Py_ssize_t length, Py_ssize_t limit, int32_t od, int64_t tsd,
                                   int tsd_size, const _ColC *kc, const _ColC *vc, Py_ssize_t idx,
                                   Py_ssize_t *bound) noexcept nogil:
    """Write record ``idx`` (offset delta ``od``, timestamp delta ``tsd``) at ``buf +
    length`` if the batch stays within ``limit`` bytes (a batch's first record always
    goes: the caller made room for it).  Returns the new length, or -1 when it does not
    fit.  Adds the record's bound to ``*bound``."""
    # Everything read from the columns is read before the first byte is written: a byte
    # store may alias anything, so reads after it would be done again per record.
    cdef Py_ssize_t kn = _col_len(kc, idx), vn = _col_len(vc, idx), body, rsize
    cdef const uint8_t *kp = <const uint8_t *>_col_ptr(kc, idx) if kn > 0 else NULL
    cdef const uint8_t *vp = <const uint8_t *>_col_ptr(vc, idx) if vn > 0 else NULL
    cdef Py_ssize_t kb = kn if kn > 0 else 0, vb = vn if vn > 0 else 0
    cdef uint8_t *p
    # Every length here is an int32 (a record fits a batch); tsd's size is the caller's.
    body = (2 + tsd_size + pylog_client_varint32_size(od) + pylog_client_varint32_size(<int32_t>kn) + kb
            + pylog_client_varint32_size(<int32_t>vn) + vb)
    rsize = pylog_client_varint32_size(<int32_t>body) + body
    if od > 0 and length + rsize > limit:
        return -1
    bound[0] += RECORD_MAX_OVERHEAD + kb + vb
    p = pylog_client_put_varint32(buf + length, <int32_t>body)
    p[0] = 0  # record attributes
    if tsd == 0:
        p[1] = 0
        p += 2
    else:
        p = put_varint(p + 1, tsd)
    p = pylog_client_put_varint32(p, od)
    p = pylog_client_put_varint32(p, <int32_t>kn)
    pylog_client_copy(p, kp, <size_t>kb)
    p = pylog_client_put_varint32(p + kb, <int32_t>vn)
    pylog_client_copy(p, vp, <size_t>vb)
    p[vb] = 0  # no headers
    return length + rsize


cdef Py_ssize_t _client_encode(RecordBatchBuilder b, const _ColC *kc, const _ColC *vc, const int32_t *order,
                               Py_ssize_t pos, Py_ssize_t end, int64_t ts, const int64_t *tss, Py_ssize_t limit,
                               Py_ssize_t *bound) noexcept nogil:
    """Write records ``order[pos:end]`` (``pos:end`` when order is NULL), all with
    timestamp ``ts`` (or each with its own, ``tss[input index]``, when tss is not NULL),
    at the end of ``b`` while the batch stays within ``limit`` bytes
    (an empty batch takes its first record whatever its size).  The caller reserved
    ``limit`` bytes of capacity, or the first record's bound more for an empty batch.
    Returns how many were written and adds their bounds to ``*bound``."""
    cdef Py_ssize_t i, length, written = 0
    cdef int32_t od = b.count
    cdef int64_t tsd
    cdef int tsd_size
    if tss != NULL:
        return _client_encode_ts(b, kc, vc, order, pos, end, tss, limit, bound)
    if b.count == 0:
        b.base_ts = ts
        b.max_ts = ts
    elif ts > b.max_ts:
        b.max_ts = ts
    tsd = <int64_t>(<uint64_t>ts - <uint64_t>b.base_ts)
    tsd_size = varint_size(tsd)
    for i in range(pos, end):
        if i + PREFETCH_AHEAD < end:
            _col_prefetch(vc, order[i + PREFETCH_AHEAD] if order != NULL else i + PREFETCH_AHEAD)
        length = _client_put(b.buf, b.length, limit, od, tsd, tsd_size, kc, vc, order[i] if order != NULL else i,
                             bound)
        if length < 0:
            break
        b.length = length
        od += 1
        written += 1
    b.count = od
    return written


cdef Py_ssize_t _client_encode_ts(RecordBatchBuilder b, const _ColC *kc, const _ColC *vc, const int32_t *order,
                                  Py_ssize_t pos, Py_ssize_t end, const int64_t *tss, Py_ssize_t limit,
                                  Py_ssize_t *bound) noexcept nogil:
    """_client_encode with a timestamp per record: an empty batch's base timestamp is its
    first record's, each record's delta is from it (negative for an earlier one: Kafka
    allows records out of timestamp order) and the max timestamp is the largest."""
    cdef Py_ssize_t i, idx, length, written = 0
    cdef int32_t od = b.count
    cdef int64_t t, tsd
    for i in range(pos, end):
        if i + PREFETCH_AHEAD < end:
            _col_prefetch(vc, order[i + PREFETCH_AHEAD] if order != NULL else i + PREFETCH_AHEAD)
        idx = order[i] if order != NULL else i
        t = tss[idx]
        if od == 0:
            b.base_ts = t
            b.max_ts = t
        tsd = <int64_t>(<uint64_t>t - <uint64_t>b.base_ts)
        length = _client_put(b.buf, b.length, limit, od, tsd, varint_size(tsd), kc, vc, idx, bound)
        if length < 0:
            break
        if t > b.max_ts:
            b.max_ts = t
        b.length = length
        od += 1
        written += 1
    b.count = od
    return written


cdef struct _BulkBuf:
    # A batch send_batch fills without the GIL (see _ProducerCore._send_interleaved).
    uint8_t *buf
    Py_ssize_t length
    Py_ssize_t bound              # sum of its records' bounds
    int32_t count
    uint32_t crc                  # CRC32C of the records section up to crc_upto ...
    Py_ssize_t crc_upto           # ... summed as it is written (while in cache); 0: none
    int64_t base_ts               # per-record timestamps: the first record's ...
    int64_t max_ts                # ... and the largest


cdef enum:
    CRC_STEP = 16384              # bytes: how often an interleaved batch is checksummed


cdef Py_ssize_t _client_interleave(const _ColC *kc, const _ColC *vc, const int32_t *parts, Py_ssize_t i,
                                   Py_ssize_t n, _BulkBuf *bufs, Py_ssize_t *skip, Py_ssize_t limit,
                                   bint crc, const int64_t *tss, int32_t *full) noexcept nogil:
    """Write records ``i:n`` in input order, each into the batch of its partition (those
    with a ``bufs`` entry; offset delta = place in the batch, timestamp delta 0, or with
    ``tss`` from the batch's first record's ``tss[i]``, its ``base_ts``/``max_ts``),
    skipping the first ``skip[p]`` of partition p.  Reading the input in order (and
    writing one stream per partition) is what keeps keyed bulk sends cache-friendly.
    With ``crc`` each batch's records section is checksummed as it grows (``crc``,
    ``crc_upto``).  Returns n, or the index of a record that does not fit its
    partition's batch (then ``*full`` is that partition)."""
    cdef int32_t p
    cdef _BulkBuf *bb
    cdef Py_ssize_t length
    cdef int64_t t = 0, tsd = 0
    cdef int tsd_size = 1
    while i < n:
        if i + PREFETCH_AHEAD < n:
            _col_prefetch(vc, i + PREFETCH_AHEAD)
        p = parts[i]
        if p >= 0 and bufs[p].buf != NULL:
            if skip[p]:
                skip[p] -= 1
            else:
                bb = &bufs[p]
                if tss != NULL:
                    t = tss[i]
                    if bb.count == 0:
                        bb.base_ts = t
                        bb.max_ts = t
                    tsd = <int64_t>(<uint64_t>t - <uint64_t>bb.base_ts)
                    tsd_size = varint_size(tsd)
                length = _client_put(bb.buf, bb.length, limit, bb.count, tsd, tsd_size, kc, vc, i, &bb.bound)
                if length < 0:
                    full[0] = p
                    return i
                if tss != NULL and t > bb.max_ts:
                    bb.max_ts = t
                bb.length = length
                bb.count += 1
                if crc and length - bb.crc_upto >= CRC_STEP:
                    # Several batches fill at once: sum this one's new part now, while it
                    # is in cache, not once it is full and evicted by the others.
                    bb.crc = pylog_crc32c(bb.crc, bb.buf + bb.crc_upto, <size_t>(length - bb.crc_upto))
                    bb.crc_upto = length
        i += 1
    return n


cdef int _client_capacity(RecordBatchBuilder b, Py_ssize_t need) except -1:
    """Grow ``b`` to hold ``need`` bytes (exactly, in pages: a bulk batch knows its size)."""
    cdef uint8_t *nb
    cdef Py_ssize_t cap
    if b.capacity >= need:
        return 0
    cap = (need + 4095) & ~(<Py_ssize_t>4095)
    nb = <uint8_t *>PyMem_Realloc(b.buf, cap)
    if nb == NULL:
        raise MemoryError()
    b.buf = nb
    b.capacity = cap
    return 0


cdef inline void _client_write_header(RecordBatchBuilder b, uint32_t body_crc) noexcept nogil:
    """Fill the header of an uncompressed CreateTime batch built in place in ``b``, its CRC
    from ``body_crc`` (the records section's) joined to the header's."""
    cdef uint8_t *o = b.buf
    cdef uint32_t crc
    pylog_put_be64(o + BATCH_BASE_OFFSET, 0)
    pylog_put_be32(o + BATCH_LENGTH, <int32_t>(b.length - BATCH_LENGTH_OVERHEAD))
    pylog_put_be32(o + BATCH_LEADER_EPOCH, b.partition_leader_epoch)
    o[BATCH_MAGIC] = 2
    pylog_put_be16(o + BATCH_ATTRIBUTES, 0x10 if b.is_transactional else 0)
    pylog_put_be32(o + BATCH_LAST_OFFSET_DELTA, b.count - 1 if b.count > 0 else 0)
    pylog_put_be64(o + BATCH_BASE_TIMESTAMP, b.base_ts)
    pylog_put_be64(o + BATCH_MAX_TIMESTAMP, b.max_ts)
    pylog_put_be64(o + BATCH_PRODUCER_ID, b.producer_id)
    pylog_put_be16(o + BATCH_PRODUCER_EPOCH, b.producer_epoch)
    pylog_put_be32(o + BATCH_BASE_SEQUENCE, b.base_sequence)
    pylog_put_be32(o + BATCH_RECORDS_COUNT, b.count)
    crc = pylog_crc32c(0, o + BATCH_ATTRIBUTES, BATCH_HEADER_SIZE - BATCH_ATTRIBUTES)
    pylog_put_be32(o + BATCH_CRC, <int32_t>pylog_client_crc32c_combine(
        crc, body_crc, <uint64_t>(b.length - BATCH_HEADER_SIZE)))


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


cdef _ProducerBatch _client_leaf(_ProducerBatch b, int32_t *index):
    """The batch that holds record ``index[0]`` of ``b``: ``b`` itself, or, for a split
    batch that is done, the part its record went to (``index[0]`` becomes the record's
    index there).  A part not done yet (a split batch failed as a whole, by close or a
    fatal error) is not followed: the split batch's outcome stands."""
    cdef Py_ssize_t j
    cdef int32_t i = index[0]
    cdef _ProducerBatch part
    while b.parts is not None and b.state == PB_DONE:
        j = len(b.parts) - 1
        while j > 0 and <int32_t>b.part_firsts[j] > i:
            j -= 1
        part = <_ProducerBatch>b.parts[j]
        if part.state != PB_DONE:
            break
        i -= <int32_t>b.part_firsts[j]
        b = part
    index[0] = i
    return b


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
        return self.batch.state == PB_DONE and self._error() is None

    def failed(self):
        return self.batch.state == PB_DONE and self._error() is not None

    cdef object _error(self):
        """The record's error once its batch is done (its own part's, if it was split)."""
        cdef int32_t i = self.index
        return _client_leaf(self.batch, &i).error

    cdef RecordMetadata _metadata(self):
        cdef int32_t i = self.index
        cdef _ProducerBatch b = _client_leaf(self.batch, &i)
        cdef RecordMetadata m = RecordMetadata.__new__(RecordMetadata)
        m.topic = b.queue.topic
        m.partition = b.queue.partition
        m.offset = b.base_offset + i if b.base_offset >= 0 else -1
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
        error = self._error()
        if error is not None:
            raise error
        return self._metadata()

    get = result

    def exception(self, timeout=None):
        """The error of a failed send (None on success), waiting like :meth:`result`."""
        if self.batch.state != PB_DONE:
            self.batch.core._wait_batch(self.batch, timeout)
        return self._error()

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
            error = self._error()
            _client_run_callbacks([(kind, fn, args, kwargs)],
                                  self._metadata() if error is None else None, error, self)
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
                error = self._error()
                meta = self._metadata() if error is None else None
            except BaseException:
                _client_log.exception("building record metadata failed")
                return
            _client_run_callbacks(callbacks, meta, error, self)

    def __await__(self):
        return _client_await(self).__await__()

    def __repr__(self):
        state = ("pending", "pending", "sending", "done")[self.batch.state]
        return f"<FutureRecordMetadata {self.batch.queue.topic}-{self.batch.queue.partition} {state}>"


cdef int _client_split_pieces(_ProducerBatch b, int64_t first, int64_t count, list out) except -1:
    """Append to ``out`` the (batch, first index, count) runs that records
    ``first:first + count`` of ``b`` went to, following its splits (see _client_leaf)."""
    cdef Py_ssize_t j
    cdef int64_t pf, lo, hi
    cdef _ProducerBatch part
    cdef bint follow = b.parts is not None and b.state == PB_DONE
    if follow:
        for part in b.parts:
            if part.state != PB_DONE:
                follow = False      # (see _client_leaf)
                break
    if not follow:
        out.append((b, first, count))
        return 0
    for j in range(len(b.parts)):
        part = <_ProducerBatch>b.parts[j]
        pf = <int64_t>b.part_firsts[j]
        lo = first if first > pf else pf
        hi = first + count if first + count < pf + part.record_count else pf + part.record_count
        if lo < hi:
            _client_split_pieces(part, lo - pf, hi - lo, out)
    return 0


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
    cdef list batches                # one per span (a batch may appear more than once)
    cdef int64_t *spans              # per span: start in the send order, count, first index in its batch
    cdef Py_ssize_t nspans, cap
    cdef object order                # int32 array: input index of each record in send order (None:
                                     # identity, or see grouped)
    cdef bint grouped                # send order grouped by partition (order None: every record keyed,
                                     # the spans of each partition in send order)
    cdef readonly object partitions  # int32 per record
    cdef Py_ssize_t pending
    cdef object error
    cdef object offsets
    cdef list callbacks
    cdef readonly int64_t timestamp  # the records' timestamp (-1: each its own)
    cdef const int64_t *tss          # while send_batch runs: per-record timestamps (input order) or NULL
    cdef Py_ssize_t reserved         # while send_batch runs: buffer_memory reserved for the call, not yet
                                     # charged to its batches (0: a call larger than buffer_memory streams)
    cdef bint overcommit             # while send_batch runs: a streaming call found no room in time and
                                     # queues the rest beyond buffer_memory

    def __dealloc__(self):
        PyMem_Free(self.spans)
        self.spans = NULL

    def done(self):
        return self.pending == 0

    def __len__(self):
        return len(self.partitions)

    cdef int _add_span(self, _ProducerBatch b, Py_ssize_t start, Py_ssize_t count, Py_ssize_t first) except -1:
        """Records ``start:start + count`` of the send order went to ``b`` from its record
        ``first`` on.  Called with the core lock held, before ``b`` can complete."""
        cdef int64_t *grown
        cdef Py_ssize_t cap
        if self.nspans == self.cap:
            cap = 16 if self.cap == 0 else 2 * self.cap
            grown = <int64_t *>PyMem_Realloc(self.spans, cap * 3 * sizeof(int64_t))
            if grown == NULL:
                raise MemoryError()
            self.spans = grown
            self.cap = cap
        self.spans[3 * self.nspans] = start
        self.spans[3 * self.nspans + 1] = count
        self.spans[3 * self.nspans + 2] = first
        self.nspans += 1
        self.batches.append(b)
        if b.listeners is None:
            b.listeners = []
        b.listeners.append(self)
        self.pending += 1
        return 0

    cdef void _batch_done(self, _ProducerBatch batch) noexcept:
        if batch.error is not None and self.error is None:
            self.error = batch.error
        if batch.parts is not None:
            try:
                self._split_spans(batch)
            except BaseException:
                _client_log.exception("following a split batch failed")
                if self.error is None:
                    self.error = IllegalStateError("send_batch lost track of a split batch (a bug in pylog)")
        self._release()

    cdef int _split_spans(self, _ProducerBatch batch) except -1:
        """``batch`` was split and is done: its spans become spans of the parts its
        records went to (in order), so that the offsets are read as for any batch.  Runs
        once per span of ``batch`` (one listener each): the first call replaces them all,
        under the core lock (another batch of this future may complete at once)."""
        cdef list batches = [], pieces
        cdef int64_t *spans = NULL
        cdef int64_t *grown
        cdef Py_ssize_t j, n = 0, cap = 0
        cdef int64_t start
        _client_lock(self.core._lock)
        try:
            if self.batches is None or not any(b is batch for b in self.batches):
                return 0
            for j in range(self.nspans):
                b = self.batches[j]
                if b is batch:
                    pieces = []
                    _client_split_pieces(batch, self.spans[3 * j + 2], self.spans[3 * j + 1], pieces)
                else:
                    pieces = [(b, self.spans[3 * j + 2], self.spans[3 * j + 1])]
                start = self.spans[3 * j]
                for part, first, count in pieces:
                    if n == cap:
                        cap = 16 if cap == 0 else 2 * cap
                        grown = <int64_t *>PyMem_Realloc(spans, cap * 3 * sizeof(int64_t))
                        if grown == NULL:
                            raise MemoryError()
                        spans = grown
                    spans[3 * n] = start
                    spans[3 * n + 1] = count
                    spans[3 * n + 2] = first
                    start += count
                    batches.append(part)
                    n += 1
            PyMem_Free(self.spans)
            self.spans, spans = spans, NULL
            self.nspans = n
            self.cap = cap
            self.batches = batches
        finally:
            _client_unlock(self.core._lock)
            PyMem_Free(spans)
        return 0

    cdef void _release(self) noexcept:
        # One span's batch resolved, or send_batch finished queueing (it holds one count
        # so that early batches completing cannot resolve the future before the last
        # span is added).  The test and the count run under the GIL with no Python code
        # between them, so exactly one caller sees the last count; it fills the offsets
        # before the count reaches zero (done() and callbacks then see them).
        cdef list callbacks
        if self.pending > 1:
            self.pending -= 1
            return
        self.pending = 0
        callbacks = self.callbacks
        self.callbacks = None
        if callbacks:
            _client_run_callbacks(callbacks, None, None, self)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _fill(self) except -1:
        """The offsets, from each span's batch, once every batch is done: computed by the
        first caller of result() (not by the sender completing the last batch).  Safe to
        run twice at once (each works on its own references; the spans live as long as
        the future)."""
        cdef Py_ssize_t j, r, start, count, n = len(self.partitions)
        cdef int64_t base, first
        cdef const int32_t *order = NULL
        cdef int32_t[::1] order_view
        cdef int64_t *out
        cdef list batches = self.batches
        cdef object order_arr = self.order
        if self.offsets is not None or batches is None:
            return 0
        arr = _np().empty(n, dtype=_np().int64)
        out = <int64_t *>pylog_array_data(arr)
        if order_arr is None and self.grouped:
            self._fill_grouped(out, n)
            self.offsets = arr
            self.batches = None
            return 0
        if order_arr is not None and n:
            order_view = order_arr
            order = &order_view[0]
        for j in range(self.nspans):
            base = (<_ProducerBatch>PyList_GET_ITEM(batches, j)).base_offset
            start = self.spans[3 * j]
            count = self.spans[3 * j + 1]
            first = self.spans[3 * j + 2]
            if base < 0:
                for r in range(count):
                    out[order[start + r] if order != NULL else start + r] = -1
            elif order != NULL:
                base += first
                for r in range(count):
                    out[order[start + r]] = base + r
            else:
                base += first
                for r in range(count):
                    out[start + r] = base + r
        self.offsets = arr
        self.batches = None
        self.order = None
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _fill_grouped(self, int64_t *out, Py_ssize_t n) except -1:
        """_fill without an order array: every record went to the partition ``partitions``
        names, and each partition's spans, in the order they were added, hold its records
        in input order.  One pass over the input, a cursor per partition."""
        cdef const int32_t *parts = <const int32_t *>pylog_array_data(self.partitions)
        cdef Py_ssize_t nparts = 0, nspans = self.nspans, i, j
        cdef int32_t p
        cdef int64_t base
        cdef bint short = False
        cdef list batches = self.batches
        cdef Py_ssize_t *nxt
        cdef Py_ssize_t *head
        cdef int64_t *first
        cdef int64_t *cur
        cdef int64_t *rem
        for j in range(nspans):
            p = (<_ProducerBatch>PyList_GET_ITEM(batches, j)).queue.partition
            if p >= nparts:
                nparts = p + 1
        nxt = <Py_ssize_t *>PyMem_Malloc((nspans + nparts) * (sizeof(Py_ssize_t) + sizeof(int64_t))
                                         + 2 * nparts * sizeof(int64_t))
        if nxt == NULL:
            raise MemoryError()
        head = nxt + nspans                            # per partition: its next span (-1: none)
        first = <int64_t *>(head + nparts)             # per span: its first record's offset
        cur = first + nspans                           # per partition: its next record's offset,
        rem = cur + nparts                             # and how many of its span are left
        try:
            for p in range(nparts):
                head[p] = -1
                rem[p] = 0
            # Each partition's spans as a list in the order they were added (built
            # backwards, walked forwards).
            for j in range(nspans - 1, -1, -1):
                b = <_ProducerBatch>PyList_GET_ITEM(batches, j)
                p = (<_ProducerBatch>b).queue.partition
                base = (<_ProducerBatch>b).base_offset
                first[j] = -1 if base < 0 else base + self.spans[3 * j + 2]
                nxt[j] = head[p]
                head[p] = j
            with nogil:
                for i in range(n):
                    p = parts[i]
                    if p < 0 or p >= nparts:
                        short = True
                        break
                    if rem[p] == 0:
                        j = head[p]
                        if j < 0:
                            short = True
                            break
                        head[p] = nxt[j]
                        rem[p] = self.spans[3 * j + 1]
                        cur[p] = first[j]
                    out[i] = cur[p]
                    if cur[p] >= 0:
                        cur[p] += 1
                    rem[p] -= 1
            if short:
                raise IllegalStateError(f"send_batch lost track of partition {p}'s records (a bug in pylog)")
        finally:
            PyMem_Free(nxt)
        return 0

    def _wait(self, timeout):
        if self.pending == 0:
            return
        deadline = None if timeout is None else _client_time.monotonic() + timeout
        for b in list(self.batches or ()):
            if (<_ProducerBatch>b).state != PB_DONE:
                self.core._wait_batch(b, None if deadline is None else max(deadline - _client_time.monotonic(), 0))
        while self.pending > 0:
            # Every batch is done; the thread that completed the last one is still
            # running its listeners (this future's count comes after other callbacks).
            if deadline is not None and _client_time.monotonic() >= deadline:
                raise RequestTimedOutError(f"the send did not complete within {timeout} s")
            _client_time.sleep(0.0001)

    def result(self, timeout=None):
        """Offsets of the records (int64 array, input order).  Raises the first batch's
        error if any batch failed (other batches may have been appended)."""
        self._wait(timeout)
        if self.error is not None:
            raise self.error
        if self.offsets is None:
            self._fill()
        return self.offsets

    def exception(self, timeout=None):
        self._wait(timeout)
        return self.error

    def record_offsets(self, timeout=None):
        """The offsets as :meth:`result` gives them, without raising: -1 for each record
        whose batch failed (and for every record with ``acks=0``), so that a caller can
        tell which records of a failed send were appended."""
        self._wait(timeout)
        if self.offsets is None:
            self._fill()
        return self.offsets

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
    buffer; the builder goes back to the pool only once no view of it is left (when its
    batch completed while views were alive, the last view's release returns it)."""
    cdef RecordBatchBuilder builder
    cdef _ProducerCore core
    cdef Py_ssize_t size
    cdef int exports
    cdef bint orphan                 # the batch is done: pool the builder at the last release

    def __len__(self):
        return self.size

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self.builder is None:
            raise BufferError("the batch's buffer was released")
        PyBuffer_FillInfo(view, self, <void *>self.builder.buf, self.size, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        cdef RecordBatchBuilder b
        self.exports -= 1
        if self.exports == 0 and self.orphan and self.builder is not None:
            b = self.builder
            self.builder = None
            self.orphan = False
            self.core._release_builder(b)


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
    cdef _BuiltBatch built             # data is it (uncompressed batches)
    cdef uint32_t body_crc             # CRC32C of the records section up to crc_upto
    cdef Py_ssize_t crc_upto           # 0: nothing summed yet (else >= BATCH_HEADER_SIZE)
    # A batch split after a MESSAGE_TOO_LARGE refusal (_ProducerCore._split): the batches
    # its records went to, in order, and the index here of each one's first record.  It
    # is done once they all are; its handles then read their record's part (_client_leaf).
    cdef readonly list parts
    cdef list part_firsts
    cdef Py_ssize_t parts_pending
    cdef _ProducerBatch parent         # a part of a split batch, until it is done

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
        self._drop_data()
        listeners = self.listeners
        self.listeners = None
        parent = self.parent
        self.parent = None
        _client_unlock(core._lock)
        if listeners:
            # Listeners: handles with callbacks, and bulk sends.
            for l in listeners:
                if type(l) is FutureRecordMetadata:
                    (<FutureRecordMetadata>l)._batch_done(self)
                else:
                    (<BatchSendFuture>l)._batch_done(self)
        if parent is not None:
            (<_ProducerBatch>parent)._part_done()
        return 0

    cdef void _drop_data(self) noexcept:
        """Let go of the batch's bytes and builder (core lock held)."""
        self.data = None
        if self.builder is not None:
            if self.built is None or self.built.exports == 0:
                self.core._release_builder(self.builder)
            else:
                # Someone still holds a view of its buffer (the sender's list of the
                # appended batches, until it moves on): pooled at the last release.
                self.built.orphan = True
            self.builder = None
        self.built = None

    cdef int _part_done(self) except -1:
        """One part of this split batch is done; the last one finishes it, failed with the
        first failed part's error if any (what a bulk send reports; a record's handle
        reports its own part's outcome)."""
        cdef _ProducerCore core = self.core
        cdef _ProducerBatch part
        cdef bint last
        _client_lock(core._lock)
        self.parts_pending -= 1
        last = self.parts_pending == 0 and self.state != PB_DONE
        _client_unlock(core._lock)
        if not last:
            return 0
        error = None
        for part in self.parts:
            if part.error is not None:
                error = part.error
                break
        self.error = error
        self._finish(error)
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
        b.is_transactional = core._transactional
        if b.codec == 0 and not b.log_append_time and not b.is_control:
            # The records section's CRC: what send_batch summed as it wrote, plus the rest.
            if self.crc_upto < BATCH_HEADER_SIZE:
                self.crc_upto = BATCH_HEADER_SIZE
                self.body_crc = 0
            if b.length - self.crc_upto >= GIL_RELEASE_BYTES:
                # The batch is the sender's alone now (the caller holds the lock, so it
                # cannot be failed and pooled meanwhile): other threads may run.
                with nogil:
                    self.body_crc = pylog_crc32c(self.body_crc, b.buf + self.crc_upto,
                                                 <size_t>(b.length - self.crc_upto))
                self.crc_upto = b.length
            elif b.length > self.crc_upto:
                self.body_crc = pylog_crc32c(self.body_crc, b.buf + self.crc_upto, <size_t>(b.length - self.crc_upto))
                self.crc_upto = b.length
            _client_write_header(b, self.body_crc)
            built = _BuiltBatch.__new__(_BuiltBatch)
            built.builder = b
            built.core = core
            built.size = b.length
            self.built = built
            # Handed on as is (not as a memoryview of it): a buffer whose exporter is a
            # _BuiltBatch is the producer's own, checksummed where it was written.
            self.data = built
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
            # The records did not change: their CRC (kept by _build) joins the new header's.
            pylog_put_be32(p + BATCH_CRC, <int32_t>pylog_client_crc32c_combine(
                pylog_crc32c(0, p + BATCH_ATTRIBUTES, BATCH_HEADER_SIZE - BATCH_ATTRIBUTES),
                self.body_crc, <uint64_t>(n - BATCH_HEADER_SIZE)))
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
    cdef int64_t txn_generation         # the producer's transaction of its last new batch

    def __repr__(self):
        return f"<_PartitionQueue {self.topic}-{self.partition} ready={len(self.ready)}>"


@cython.final
cdef class _TopicQueue:
    cdef readonly str name
    cdef readonly int32_t num_partitions
    cdef uint64_t mod_m        # pylog_client_fastmod's multiplier for num_partitions
    cdef list parts
    cdef tuple available       # every partition (all have a leader on one node)
    cdef readonly Py_ssize_t max_record_bytes
    cdef Py_ssize_t batch_limit    # where send() closes a batch: batch_size, or max_record_bytes if lower


# ---------------------------------------------------------------------------------------
# The accumulator

cdef class _ProducerCore:
    """The producer's record accumulator and per-record send path (subclassed by
    :class:`pylog.client.producer.Producer`, which adds the sender thread and the waits).

    The subclass provides ``_topic_metadata(topic) -> (partitions, max_batch_bytes)``,
    ``_wake_sender()``, ``_wait_for_memory(nbytes)``, ``_wait_batch(batch, timeout)`` and
    ``_expedite(batch)``; a transactional one also ``_check_send()`` (raises why records
    are refused outside a transaction, see :meth:`_set_accepting`) and
    ``_txn_partitions_queued()`` (see :meth:`_take_txn_partitions`).
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
    cdef Py_ssize_t _pool_bytes      # capacity of the pooled builders
    cdef Py_ssize_t _pool_max
    cdef Py_ssize_t _pool_item_max
    cdef Py_ssize_t _bulk_bytes      # send_batch's own batches: up to this (or batch_size)
    cdef set _incomplete
    cdef bint _idempotent
    cdef bint _transactional         # batches carry the transactional attribute
    cdef bint _refusing              # transactional, not in a transaction: send asks _check_send()
    cdef int64_t _txn_generation     # counts transactions (a transactional producer)
    cdef list _txn_new               # (topic, partition) of a first batch in this transaction
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
        self._txn_new = []
        self._closed = True

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)
            self._lock = NULL

    def _configure(self, *, Py_ssize_t batch_size, int64_t linger_ms, compression, Py_ssize_t max_request_size,
                   Py_ssize_t buffer_memory, partitioner, key_serializer, value_serializer,
                   int64_t delivery_timeout_ms, bint idempotent, bint transactional=False):
        codec_from(compression)      # UnsupportedCompressionTypeError for a bad name
        self._compression = compression
        self._batch_size = batch_size
        self._linger_ms = linger_ms
        self._max_request_size = max_request_size
        self._buffer_memory = buffer_memory
        self._wake_bytes = max(4 * batch_size, min(buffer_memory // 4, 1024 * 1024))
        self._bulk_bytes = min(buffer_memory // 4, 1024 * 1024)
        self._pool_item_max = max(4 * batch_size + 65536, 2 * self._bulk_bytes)
        self._pool_max = max(min(buffer_memory, 64 * 1024 * 1024), self._pool_item_max)
        self._delivery_timeout_ms = delivery_timeout_ms
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._idempotent = idempotent
        self._transactional = transactional
        self._refusing = transactional
        self._partitioner = partitioner
        if type(partitioner) is DefaultPartitioner:
            self._pkind = PART_STICKY if (<DefaultPartitioner>partitioner)._ignore_keys else PART_DEFAULT
        elif type(partitioner) is UniformStickyPartitioner:
            self._pkind = PART_STICKY
        else:
            self._pkind = PART_CUSTOM
        self._closed = False

    def _set_accepting(self, bint accepting):
        """A transactional producer: whether records are accepted now (in a
        transaction).  While not, send and send_batch call the subclass's
        ``_check_send()``, which raises the reason; the per-record path pays one flag.
        Accepting again starts a new transaction: the first batch of each partition in
        it is reported (:meth:`_take_txn_partitions`)."""
        _client_lock(self._lock)
        if accepting and self._refusing:
            self._txn_generation += 1
            self._txn_new = []
        self._refusing = self._transactional and not accepting
        _client_unlock(self._lock)

    def _take_txn_partitions(self):
        """The (topic, partition) whose first batch of the transaction was opened since
        the last call (send and send_batch call the subclass's ``_txn_partitions_queued()``
        when there are some): Kafka's producer adds a partition to the transaction as
        soon as a record for it is queued, not when its batch is sent."""
        cdef list out
        _client_lock(self._lock)
        out, self._txn_new = self._txn_new, []
        _client_unlock(self._lock)
        return out

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
            tq.batch_limit = min(tq.max_record_bytes, self._batch_size)
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
            # Both together, with nothing in between that could run Python code: a
            # send() (which reads them without the lock) sees the old pair or the new.
            tq.num_partitions = count
            tq.mod_m = pylog_client_fastmod_m(<uint32_t>count)
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
                # A topic whose max.message.bytes is below batch_size gets batches it
                # takes (not ones it refuses, to be split).
                tq.batch_limit = min(tq.max_record_bytes, self._batch_size)
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
            self._pool_bytes -= b.capacity
            _client_reset_builder(b)
            return b
        return RecordBatchBuilder(compression=self._compression, batch_size=self._batch_size)

    def _bulk_batch_bytes(self):
        """Largest batch send_batch fills on its own (before the topic's limits)."""
        return max(self._batch_size, self._bulk_bytes)

    def _pooled_bytes(self):
        """Capacity of the batch buffers kept for reuse."""
        return self._pool_bytes

    def _trim_pool(self, Py_ssize_t keep_bytes):
        """Free pooled batch buffers, the longest unused first, until at most
        ``keep_bytes`` remain (an idle producer after bulk sends)."""
        cdef RecordBatchBuilder b
        cdef list freed = []
        _client_lock(self._lock)
        try:
            while self._pool and self._pool_bytes > keep_bytes:
                b = <RecordBatchBuilder>self._pool.pop(0)
                self._pool_bytes -= b.capacity
                freed.append(b)
        finally:
            _client_unlock(self._lock)
        del freed        # deallocated outside the lock

    cdef void _release_builder(self, RecordBatchBuilder b) noexcept:
        # Keep some for reuse: their grown (and already faulted-in) buffers make the next
        # batches allocation-free.  Bounded in count and bytes.  Runs under the GIL with
        # no Python code in between, so it is atomic also where the lock is not held
        # (the last release of a built batch's view).
        if (len(self._pool) < 256 and b.capacity <= self._pool_item_max
                and self._pool_bytes + b.capacity <= self._pool_max):
            self._pool.append(b)
            self._pool_bytes += b.capacity

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
        b = self._new_batch(pq, now, self._new_builder())
        pq.open = b
        return b

    cdef _ProducerBatch _new_batch(self, _PartitionQueue pq, int64_t now, RecordBatchBuilder builder):
        """A batch of pq around ``builder``, counted as incomplete (lock held)."""
        cdef _ProducerBatch b
        b = _ProducerBatch.__new__(_ProducerBatch)
        b.builder = builder
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
        self._incomplete.add(b)
        if self._transactional and pq.txn_generation != self._txn_generation:
            pq.txn_generation = self._txn_generation
            self._txn_new.append((pq.topic, pq.partition))
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
        if b is not None and b.builder.count > 0 and b.builder.length + size > tq.batch_limit:
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

        A record larger than ``buffer_memory`` raises RecordTooLargeError (as Kafka's
        producer does): it could never be buffered.  Nothing is queued when it raises.
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
        if self._refusing:
            self._check_send()
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
            if size > self._buffer_memory:
                raise self._larger_than_buffer(size)
            if partition is not None:
                p = _client_partition(partition, tq.num_partitions, tq.name)
            elif self._pkind == PART_DEFAULT and k.n >= 0:
                # _broker_key_partition, with the modulo as a multiply.
                p = <int32_t>pylog_client_fastmod(_broker_murmur2(<const uint8_t *>k.p, k.n) & 0x7fffffff,
                                                  tq.mod_m, <uint32_t>tq.num_partitions)
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
                if b is None or (b.builder.count > 0 and b.builder.length + size > tq.batch_limit):
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
        if self._txn_new:
            self._txn_partitions_queued()
        return h

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
        timestamp_ms : int, or a sequence / 1-D integer numpy array of ints, optional
            One timestamp for all (default: now), or one per value (ms since the
            epoch, >= 0), in any order: each batch's base timestamp is its first
            record's and its max timestamp the largest.

        Records of a partition are queued in input order, except that a call's keyless
        records (which go to the sticky partition) are queued before its keyed ones.
        What fits a partition's open batch (``batch_size``) joins it as with :meth:`send`,
        and a remainder smaller than ``batch_size`` opens a new batch that lingers;
        larger runs go in batches of their own of up to 1 MiB (``batch_size`` if larger;
        at most a quarter of ``buffer_memory``, the topic's ``max.message.bytes`` and
        ``max_request_size``), written and checksummed without holding the GIL and handed
        to the sender as each fills.

        Returns
        -------
        BatchSendFuture

        A call is all or nothing, as each of Kafka's ``send`` calls is for its record:
        either it raises and nothing of it is queued, or every record is queued and the
        future reports each one's outcome (:meth:`BatchSendFuture.record_offsets`).  When
        the call's records fit ``buffer_memory`` it waits (up to ``max_block_ms``) for room
        for all of them before queuing any, and then never waits again.  A larger call
        cannot be held at once: it waits up to ``max_block_ms`` for room for its first
        batch, then streams, waiting (up to ``max_block_ms`` each time) for each next batch
        as the sender frees memory.  Once part of it is queued it never raises: if such a
        wait runs out (a hung leader), the rest of the call is queued beyond
        ``buffer_memory`` (by at most the call's own size, which the caller holds anyway),
        so that the call returns and the future reports every record's outcome.

        Raises
        ------
        The errors of :meth:`send` (checked for every record before any is queued),
        RecordTypeError for items that are not bytes or None, ValueError for a number of
        timestamps other than of values, and InvalidTimestampError for timestamps that
        are not integers >= 0.  RequestTimedOutError when ``buffer_memory`` had no room
        for the call (or its first batch) within ``max_block_ms``; RecordTooLargeError for
        a record larger than ``buffer_memory``.
        """
        cdef _TopicQueue tq
        cdef BatchSendFuture fut = None
        cdef _Column vcol, kcol
        cdef Py_ssize_t n, i, gstart, ngroups = 0, nkeyed = 0, max_bound = 0, target, cap, itarget, icap, need
        cdef Py_ssize_t total, est
        cdef int32_t p, fixed_p = -1, nparts, g
        cdef int32_t *parts
        cdef int32_t *order = NULL
        cdef Py_ssize_t *gcount = NULL
        cdef Py_ssize_t *gbytes = NULL
        cdef Py_ssize_t *gnext = NULL
        cdef int64_t ts
        cdef const int64_t *tss = NULL
        cdef bint custom, interleave
        cdef PyObject *o
        if self._closed:
            raise IllegalStateError("cannot send: the producer is closed")
        if self._refusing:
            self._check_send()
        if self._key_serializer is not None or self._value_serializer is not None:
            raise IllegalStateError("send_batch takes serialized bytes: use a producer without serializers")
        o = PyDict_GetItem(self._topics, topic) if type(topic) is str else NULL
        tq = <_TopicQueue>o if o != NULL else self._topic_queue(topic)
        vcol = _Column.wrap(values, "values")
        n = vcol.n
        if n >= INT32_MAX:
            raise ValueError(f"send_batch takes fewer than 2**31 - 1 records, not {n}")
        if timestamp_ms is None or isinstance(timestamp_ms, int):
            ts = _client_timestamp(timestamp_ms)
            ts_arr = None
        else:
            ts_arr = _client_timestamps(timestamp_ms, n)
            ts = -1
            if n:
                tss = <const int64_t *>pylog_array_data(ts_arr)
        if keys is not None:
            kcol = _Column.wrap(keys, "keys")
            if kcol.n != n:
                raise ValueError(f"{kcol.n} keys for {n} values")
            kcol.pack()
        else:
            kcol = _Column.empty(n)
        if partition is not None:
            fixed_p = _client_partition(partition, tq.num_partitions, tq.name)
        nparts = tq.num_partitions
        custom = self._pkind == PART_CUSTOM and fixed_p < 0
        parts_arr = _np().empty(n, dtype=_np().int32)
        parts = <int32_t *>pylog_array_data(parts_arr)
        # Per group (group 0: keyless records, sticky; group p + 1: partition p).
        gcount = <Py_ssize_t *>PyMem_Malloc(3 * (nparts + 1) * sizeof(Py_ssize_t))
        if gcount == NULL:
            raise MemoryError()
        gbytes = gcount + (nparts + 1)
        gnext = gbytes + (nparts + 1)
        memset(gcount, 0, 3 * (nparts + 1) * sizeof(Py_ssize_t))
        try:
            # Pass 1: types, sizes and partitions of every record, before anything is queued.
            _client_scan(kcol, vcol, n, fixed_p, self._pkind == PART_DEFAULT, 0 if custom else nparts,
                         tq.max_record_bytes - BATCH_HEADER_SIZE, parts, gcount, gbytes, &max_bound)
            if custom:
                for i in range(n):
                    p = _client_partition(self._partitioner.partition(
                        tq.name, kcol.item(i), kcol.item(i), nparts, None), nparts, tq.name)
                    parts[i] = p
                    gcount[p + 1] += 1
                    gbytes[p + 1] += _col_bound(&kcol.c, &vcol.c, i)
            if n and max_bound > self._buffer_memory:
                raise self._larger_than_buffer(max_bound)
            total = 0
            for g in range(nparts + 1):
                total += gbytes[g]
            target = max(self._batch_size, self._bulk_bytes)
            if target > tq.max_record_bytes:
                target = tq.max_record_bytes
            # Room before anything is queued (max_block_ms, raising with nothing queued):
            # for the whole call when it fits buffer_memory, reserved so that it never
            # waits again; else for its first batch (it streams, see the docstring).
            est = total if total <= self._buffer_memory else min(total, target)
            if self._buffered + est > self._buffer_memory and self._buffered > 0:
                self._wait_for_memory(est)
            fut = BatchSendFuture.__new__(BatchSendFuture)
            fut.core = self
            fut.partitions = parts_arr
            fut.timestamp = ts
            fut.tss = tss
            fut.batches = []
            fut.pending = 1          # send_batch's own count, released once all is queued
            if total <= self._buffer_memory:
                _client_lock(self._lock)
                self._buffered += total
                fut.reserved = total
                _client_unlock(self._lock)
            cap = max(target, BATCH_HEADER_SIZE + max_bound)
            for g in range(nparts + 1):
                if gcount[g]:
                    ngroups += 1
                    if g > 0:
                        nkeyed += 1
            interleave = False
            if nkeyed > 1:
                # Keyed records for several partitions: written in one pass over the input
                # (in order: reading it through the grouped order instead would miss the
                # cache), one batch per partition at a time.  Those being filled at once
                # must fit half of buffer_memory (smaller batches for many partitions,
                # down to batch_size; else one partition after another).
                itarget = min(target, max(self._batch_size, (self._buffer_memory // 2) // nkeyed))
                icap = max(itarget, BATCH_HEADER_SIZE + max_bound)
                need = 0
                for g in range(1, nparts + 1):
                    if gcount[g]:
                        need += min(icap, BATCH_HEADER_SIZE + gbytes[g])
                interleave = need <= self._buffer_memory // 2
            if ngroups > 1:
                # Send order: records grouped by partition, input order within each group.
                # What each batch holds is a run of it.  When the interleaved pass writes
                # every record, the order is only needed to top up open batches (built
                # then), and result() follows the partitions instead.
                gstart = 0
                for g in range(nparts + 1):
                    gnext[g] = gstart
                    gstart += gcount[g]
                fut.grouped = True
                if not (interleave and nkeyed == ngroups):
                    order = _client_group_order(fut, parts, n, gcount, nparts)
            if interleave:
                self._send_interleaved(tq, fut, kcol, vcol, order, parts, gnext, gcount, gbytes, nparts,
                                       ts, itarget, icap, nkeyed == ngroups)
            for g in range(nparts + 1):
                if gcount[g]:
                    self._send_group(tq, fut, kcol, vcol, order, parts, g - 1, nparts, gnext[g],
                                     gcount[g], gbytes[g], ts, target, cap)
        finally:
            PyMem_Free(gcount)
            if fut is not None and fut.reserved:
                # What the call's batches did not take (bounds are estimates), or all of
                # it when queueing failed.
                _client_lock(self._lock)
                self._buffered -= fut.reserved
                fut.reserved = 0
                _client_unlock(self._lock)
                self._notify_done()
        fut.tss = NULL
        fut._release()
        if self._txn_new:
            self._txn_partitions_queued()
        return fut

    cdef inline void _charge(self, BatchSendFuture fut, Py_ssize_t nbytes) noexcept:
        """Count ``nbytes`` of a send_batch call's records in buffer_memory, out of what
        the call reserved first (lock held)."""
        cdef Py_ssize_t take = nbytes if nbytes < fut.reserved else fut.reserved
        fut.reserved -= take
        self._buffered += nbytes - take

    cdef object _larger_than_buffer(self, Py_ssize_t size):
        return RecordTooLargeError(
            f"a record of about {size} bytes is larger than buffer_memory={self._buffer_memory}: "
            f"it could never be buffered; raise the producer's buffer_memory")

    cdef int _publish(self, _PartitionQueue pq, RecordBatchBuilder builder, BatchSendFuture fut,
                      Py_ssize_t start, Py_ssize_t bound, uint32_t crc, bint sticky, bint linger) except -1:
        """Queue a batch send_batch filled on its own (records ``start:`` of the send
        order; ``crc`` its records section's CRC32C when uncompressed), behind what its
        partition had: closed and ready, or with ``linger`` (a remainder smaller than
        batch_size) as the partition's open batch.  The builder is the queue's (or back
        in the pool) whatever happens."""
        cdef _ProducerBatch b
        cdef bint wake = False
        _client_lock(self._lock)
        try:
            if self._closed:
                self._release_builder(builder)
                raise IllegalStateError("the producer was closed during send_batch")
            if pq.open is not None:
                self._close_open(pq)     # what the partition had goes first
            b = self._new_batch(pq, pylog_now_ms(), builder)
            if builder.codec == 0:
                b.body_crc = crc
                b.crc_upto = builder.length
            b.reserved = bound
            self._charge(fut, bound)
            fut._add_span(b, start, builder.count, 0)
            if linger:
                b.state = PB_OPEN
                pq.open = b
            else:
                b.state = PB_CLOSED
                b.record_count = builder.count
                pq.ready.append(b)
                self._ready_bytes += builder.length
                if sticky:
                    self._partitioner.on_new_batch(pq.topic, pq.partition)
                if self._sender_state != SENDER_RUNNING:
                    self._sender_state = SENDER_RUNNING
                    wake = True
        finally:
            _client_unlock(self._lock)
        if wake:
            self._wake_sender()
        return 0

    cdef RecordBatchBuilder _bulk_builder(self, Py_ssize_t cap, int64_t ts):
        """An empty builder from the pool with room for ``cap`` bytes, for a batch of
        records all stamped ``ts``."""
        cdef RecordBatchBuilder builder
        _client_lock(self._lock)
        builder = self._new_builder()
        _client_unlock(self._lock)
        try:
            _client_capacity(builder, cap)
        except BaseException:
            _client_lock(self._lock)
            self._release_builder(builder)
            _client_unlock(self._lock)
            raise
        builder.base_ts = ts
        builder.max_ts = ts
        return builder

    cdef int _fill_open(self, _TopicQueue tq, BatchSendFuture fut, const _ColC *kc, const _ColC *vc,
                        const int32_t *order, int32_t *parts, _PartitionQueue pq, Py_ssize_t pos, Py_ssize_t end,
                        Py_ssize_t rem, int64_t ts, bint sticky, Py_ssize_t *written,
                        Py_ssize_t *bound) except -1:
        """Records ``pos:end`` of the send order into pq's open batch (opened when there is
        none) while it stays within batch_size, as send() would put them; closes it when
        it fills first.  Lock held."""
        cdef _ProducerBatch b = pq.open
        cdef RecordBatchBuilder builder
        cdef Py_ssize_t need, k, ub = 0, first, i
        cdef Py_ssize_t batch_size = tq.batch_limit
        if b is None:
            b = self._open_batch(pq, pylog_now_ms())
        builder = b.builder
        need = builder.length + _col_bound(kc, vc, order[pos] if order != NULL else pos)
        if need < batch_size:
            need = batch_size
        if need > builder.length + rem:
            need = builder.length + rem
        builder._reserve(need - builder.length)
        first = builder.count
        k = _client_encode(builder, kc, vc, order, pos, end, ts, fut.tss, batch_size, &ub)
        b.reserved += ub
        self._charge(fut, ub)
        if k:
            fut._add_span(b, pos, k, first)
            if sticky:
                for i in range(pos, pos + k):
                    parts[order[i] if order != NULL else i] = pq.partition
        if pos + k < end:
            # Full: the rest goes to the next batch (another partition for keyless records).
            self._close_open(pq)
            if sticky:
                self._partitioner.on_new_batch(tq.name, pq.partition)
        written[0] = k
        bound[0] = ub
        return 0

    cdef bint _wake_if_needed(self) noexcept:
        """After records were queued (lock held): whether the sender must be woken."""
        if self._sender_state == SENDER_IDLE or (
                self._sender_state == SENDER_TIMED and self._ready_bytes >= self._wake_bytes):
            self._sender_state = SENDER_RUNNING
            return True
        return False

    cdef int _send_group(self, _TopicQueue tq, BatchSendFuture fut, _Column kcol, _Column vcol,
                         const int32_t *order, int32_t *parts, int32_t p, int32_t nparts, Py_ssize_t pos,
                         Py_ssize_t count, Py_ssize_t rem, int64_t ts, Py_ssize_t target,
                         Py_ssize_t cap) except -1:
        """send_batch's pass 2 for one group: records ``pos:pos + count`` of the send
        order, all for partition ``p`` (-1: the sticky partition), ``rem`` bytes of bounds.

        What fits the partition's open batch goes there (under the lock, with the GIL),
        and a remainder smaller than ``batch_size`` opens a new batch left to linger.
        Larger runs are written into batches of their own without the GIL or the lock (no
        one else sees them yet), checksummed, and then queued behind what the partition
        had."""
        cdef Py_ssize_t end = pos + count, k, ub, idx, i, est, stop, step, start_len
        cdef _PartitionQueue pq
        cdef _ProducerBatch b
        cdef RecordBatchBuilder builder
        cdef bint wake, bulk, release
        cdef uint32_t crc = 0
        cdef const _ColC *kc = &kcol.c
        cdef const _ColC *vc = &vcol.c
        cdef const int64_t *tss = fut.tss
        while pos < end:
            if order == NULL:
                # Records before pos are written (one group, in input order): drop the
                # snapshot's references while they are in cache.
                kcol.release_upto(pos)
                vcol.release_upto(pos)
            est = rem if rem < target else target
            if (fut.reserved == 0 and not fut.overcommit and self._buffered + est > self._buffer_memory
                    and self._buffered > 0 and not self._wait_for_memory_streaming(est)):
                fut.overcommit = True
            idx = order[pos] if order != NULL else pos
            wake = False
            bulk = False
            _client_lock(self._lock)
            try:
                if self._closed:
                    raise IllegalStateError("the producer was closed during send_batch")
                if p < 0:
                    pq = self._sticky_queue(tq, _col_bound(kc, vc, idx), nparts)
                else:
                    pq = <_PartitionQueue>PyList_GET_ITEM(tq.parts, p)
                b = pq.open
                if b is not None and b.builder.count > 0:
                    self._fill_open(tq, fut, kc, vc, order, parts, pq, pos, end, rem, ts, p < 0, &k, &ub)
                    pos += k
                    rem -= ub
                    wake = self._wake_if_needed()
                else:
                    bulk = True
            finally:
                _client_unlock(self._lock)
            if wake:
                self._wake_sender()
            if not bulk:
                continue
            # A batch of its own (a last one smaller than batch_size is left open to
            # linger, as send() would leave it).
            builder = self._bulk_builder(min(cap, BATCH_HEADER_SIZE + rem), ts)
            ub = 0
            k = 0
            crc = 0
            release = order == NULL and vcol.owns_items()
            while True:
                # In steps of RELEASE_STEP records when a list snapshot's references are
                # dropped as it goes; each step checksummed while in cache.
                stop = min(end, pos + k + RELEASE_STEP) if release else end
                with nogil:
                    start_len = builder.length
                    step = _client_encode(builder, kc, vc, order, pos + k, stop, ts, tss, target, &ub)
                    if builder.codec == 0:
                        crc = pylog_crc32c(crc, builder.buf + start_len, <size_t>(builder.length - start_len))
                k += step
                if release:
                    vcol.release_upto(pos + k)
                if pos + k < stop or stop == end:
                    break
            if p < 0:
                for i in range(pos, pos + k):
                    parts[order[i] if order != NULL else i] = pq.partition
            self._publish(pq, builder, fut, pos, ub, crc, p < 0,
                          pos + k == end and builder.length < self._batch_size)
            pos += k
            rem -= ub
        return 0

    cdef int _send_interleaved(self, _TopicQueue tq, BatchSendFuture fut, _Column kcol, _Column vcol,
                               int32_t *order, int32_t *parts, Py_ssize_t *gstart, Py_ssize_t *gcount,
                               Py_ssize_t *gbytes, int32_t nparts, int64_t ts, Py_ssize_t target,
                               Py_ssize_t cap, bint release) except -1:
        """send_batch's pass 2 for keyed records of several partitions: first each
        partition's open batch is topped up (as _send_group does), then the rest is
        written in one pass over the input, in input order, into a batch of its own per
        partition (up to ``target`` bytes), each queued as it fills, the last ones left
        open to linger when smaller than batch_size.  Their groups are marked done
        (``gcount`` 0)."""
        cdef _BulkBuf *bufs = NULL
        cdef Py_ssize_t *skip = NULL
        cdef Py_ssize_t *sent = NULL
        cdef Py_ssize_t i, k, ub, n = len(fut.partitions), est
        cdef int32_t p, full = -1
        cdef list builders = [None] * nparts
        cdef RecordBatchBuilder builder
        cdef _PartitionQueue pq
        cdef uint32_t crc = 0
        cdef bint wake = False, ok = False, plain = codec_from(self._compression) == 0
        cdef const _ColC *kc = &kcol.c
        cdef const _ColC *vc = &vcol.c
        cdef const int64_t *tss = fut.tss
        bufs = <_BulkBuf *>PyMem_Malloc(nparts * sizeof(_BulkBuf) + 2 * nparts * sizeof(Py_ssize_t))
        if bufs == NULL:
            raise MemoryError()
        memset(bufs, 0, nparts * sizeof(_BulkBuf) + 2 * nparts * sizeof(Py_ssize_t))
        skip = <Py_ssize_t *>(bufs + nparts)
        sent = skip + nparts
        try:
            _client_lock(self._lock)
            try:
                if self._closed:
                    raise IllegalStateError("the producer was closed during send_batch")
                for p in range(nparts):
                    if gcount[p + 1] == 0:
                        continue
                    pq = <_PartitionQueue>PyList_GET_ITEM(tq.parts, p)
                    if pq.open is not None and pq.open.builder.count > 0:
                        if order == NULL:
                            order = _client_group_order(fut, parts, n, gcount, nparts)
                        self._fill_open(tq, fut, kc, vc, order, parts, pq, gstart[p + 1],
                                        gstart[p + 1] + gcount[p + 1], gbytes[p + 1], ts, False, &k, &ub)
                        skip[p] = sent[p] = k
                        gbytes[p + 1] -= ub
                    if sent[p] < gcount[p + 1]:
                        bufs[p].length = -1    # marks the partitions to write below
                    else:
                        gcount[p + 1] = 0      # all of it went into the open batch
                wake = self._wake_if_needed()
            finally:
                _client_unlock(self._lock)
            if wake:
                self._wake_sender()
            for p in range(nparts):
                if bufs[p].length == -1:
                    builder = self._bulk_builder(min(cap, BATCH_HEADER_SIZE + gbytes[p + 1]), ts)
                    builders[p] = builder
                    bufs[p].buf = builder.buf
                    bufs[p].length = BATCH_HEADER_SIZE
                    bufs[p].crc = 0
                    bufs[p].crc_upto = BATCH_HEADER_SIZE
            i = 0
            release = release and vcol.owns_items()
            while True:
                full = -1
                with nogil:
                    i = _client_interleave(kc, vc, parts, i, min(n, i + RELEASE_STEP) if release else n,
                                           bufs, skip, target, plain, tss, &full)
                    if full >= 0 and plain:
                        crc = pylog_crc32c(bufs[full].crc, bufs[full].buf + bufs[full].crc_upto,
                                           <size_t>(bufs[full].length - bufs[full].crc_upto))
                if release:
                    # Every record before i is written (this pass writes them all).
                    vcol.release_upto(i)
                if full < 0:
                    if i >= n:
                        break
                    continue
                # Partition full's batch is full: queue it, start its next one.
                builder = <RecordBatchBuilder>builders[full]
                builder.length = bufs[full].length
                builder.count = bufs[full].count
                if tss != NULL:
                    builder.base_ts = bufs[full].base_ts
                    builder.max_ts = bufs[full].max_ts
                builders[full] = None
                bufs[full].buf = NULL
                ub = bufs[full].bound
                self._publish(<_PartitionQueue>PyList_GET_ITEM(tq.parts, full), builder, fut,
                              gstart[full + 1] + sent[full], ub, crc, False, False)
                sent[full] += bufs[full].count
                gbytes[full + 1] -= ub
                est = gbytes[full + 1] if gbytes[full + 1] < target else target
                if (fut.reserved == 0 and not fut.overcommit and self._buffered + est > self._buffer_memory
                        and self._buffered > 0 and not self._wait_for_memory_streaming(est)):
                    fut.overcommit = True
                builder = self._bulk_builder(min(cap, BATCH_HEADER_SIZE + gbytes[full + 1]), ts)
                builders[full] = builder
                bufs[full].buf = builder.buf
                bufs[full].length = BATCH_HEADER_SIZE
                bufs[full].count = 0
                bufs[full].bound = 0
                bufs[full].crc = 0
                bufs[full].crc_upto = BATCH_HEADER_SIZE
            # The last batch of each: queued, or left open to linger when smaller than
            # batch_size.
            for p in range(nparts):
                if builders[p] is None:
                    continue
                builder = <RecordBatchBuilder>builders[p]
                builders[p] = None
                builder.length = bufs[p].length
                builder.count = bufs[p].count
                if tss != NULL:
                    builder.base_ts = bufs[p].base_ts
                    builder.max_ts = bufs[p].max_ts
                gcount[p + 1] = 0
                if builder.count == 0:
                    _client_lock(self._lock)
                    self._release_builder(builder)
                    _client_unlock(self._lock)
                    continue
                with nogil:
                    crc = 0
                    if plain:
                        crc = pylog_crc32c(bufs[p].crc, builder.buf + bufs[p].crc_upto,
                                           <size_t>(builder.length - bufs[p].crc_upto))
                self._publish(<_PartitionQueue>PyList_GET_ITEM(tq.parts, p), builder, fut,
                              gstart[p + 1] + sent[p], bufs[p].bound, crc, False,
                              builder.length < self._batch_size)
            ok = True
        finally:
            if not ok:
                _client_lock(self._lock)
                for b in builders:
                    if b is not None:
                        self._release_builder(<RecordBatchBuilder>b)
                _client_unlock(self._lock)
            PyMem_Free(bufs)
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

    def _split(self, _ProducerBatch batch, Py_ssize_t max_bytes):
        """Split ``batch``, refused as MESSAGE_TOO_LARGE and not appended, into batches of
        at most ``max_bytes`` (uncompressed; a record larger than that goes alone), as
        Kafka's producer does (ProducerBatch.split).  Returns the new batches in record
        order, for the sender to put back first in the partition's queue; None when the
        batch holds fewer than two records or is done.

        The parts take the batch's place: its deadline, and (idempotent producer) its
        sequence range, numbered on from its base sequence, so the partition's later
        batches keep their numbers.  The batch itself is done once all its parts are;
        its handles then report their own record's part (offsets or error)."""
        cdef list records, builders = [], firsts = [], parts = []
        cdef RecordBatchBuilder builder = None
        cdef _ProducerBatch part
        cdef Record r
        cdef Py_ssize_t i, need, klen, vlen, hsize
        cdef int32_t hcount
        if batch.state == PB_DONE or batch.record_count < 2 or batch.data is None:
            return None
        # The batch is the sender's alone (refused, not queued): read without the lock.
        view = RecordBatch(batch.data)
        records = list(view)
        view = None             # (its export of the batch's buffer)
        for i in range(len(records)):
            r = <Record>records[i]
            klen = -1 if r.key is None else len(r.key)
            vlen = -1 if r.value is None else len(r.value)
            hsize = 0
            if r.headers:
                encode_headers(r.headers, &hcount, &hsize)
            need = RECORD_MAX_OVERHEAD + (klen if klen > 0 else 0) + (vlen if vlen > 0 else 0) + hsize
            if builder is None or (builder.count > 0 and builder.length + need > max_bytes):
                builder = RecordBatchBuilder(compression=self._compression, batch_size=self._batch_size)
                builders.append(builder)
                firsts.append(i)
            builder.append(r.timestamp, r.key, r.value, r.headers)
        if len(builders) < 2:
            return None
        _client_lock(self._lock)
        try:
            if batch.state == PB_DONE:      # failed meanwhile (close, a fatal error)
                return None
            for i in range(len(builders)):
                builder = <RecordBatchBuilder>builders[i]
                part = self._new_batch(batch.queue, batch.created_ms, builder)
                part.deadline_ms = batch.deadline_ms
                part.state = PB_SENDING
                part.record_count = builder.count
                part.parent = batch
                if batch.base_sequence >= 0:
                    part.base_sequence = <int32_t>((<int64_t>batch.base_sequence + <int64_t>firsts[i]) % 2147483648)
                    part.seq_producer_id = batch.seq_producer_id
                    part.seq_epoch = batch.seq_epoch
                parts.append(part)
            batch.parts = parts
            batch.part_firsts = firsts
            batch.parts_pending = len(parts)
            batch._drop_data()
        finally:
            _client_unlock(self._lock)
        return list(parts)

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

    def _abort_undrained(self, error):
        """Fail every batch not handed to the sender now (open, ready, waiting for a retry)
        with ``error``; what the sender has out is left to its answers (a transaction
        being aborted).  Returns how many batches were failed."""
        cdef _PartitionQueue pq
        cdef list failed = []
        _client_lock(self._lock)
        try:
            for pq in self._queues:
                if pq.open is not None:
                    self._close_open(pq)
                while len(pq.ready):
                    b = pq.ready.popleft()
                    if (<_ProducerBatch>b).state == PB_CLOSED:
                        self._ready_bytes -= (<_ProducerBatch>b).builder.length
                    failed.append(b)
                pq.blocked_until = 0
        finally:
            _client_unlock(self._lock)
        for b in failed:
            (<_ProducerBatch>b).fail(error)
        return len(failed)


# ---------------------------------------------------------------------------------------
# A column of keys or values for send_batch: a sequence of bytes/None, a 2-D uint8 array
# or a fixed-width bytes array.

@cython.final
cdef class _Column:
    # A column of keys or values for send_batch: a tuple or list of bytes/None, a 2-D
    # uint8 array or a fixed-width bytes array.  A list's items are snapshotted (with a
    # reference each) by _client_scan, so the GIL-free loops read objects that stay
    # alive whatever another thread does to the list; a tuple's are read in place.
    cdef Py_ssize_t n
    cdef object keep                 # the tuple, list or array read
    cdef _ColC c                     # how the GIL-free loops read it
    cdef bint is_list
    cdef Py_ssize_t nowned           # list snapshot: items [released, nowned) hold a reference
    cdef Py_ssize_t released
    cdef bint packed                 # items copied into one buffer by scan (keys)
    cdef char *arena
    cdef Py_ssize_t arena_len, arena_cap

    def __dealloc__(self):
        if self.packed:
            PyMem_Free(<void *>self.c.lens)
            PyMem_Free(<void *>self.c.offs)
            PyMem_Free(self.arena)
            self.c.lens = NULL
            self.c.offs = NULL
            self.arena = NULL
            return
        if self.is_list and self.c.items != NULL:
            self.release_upto(self.nowned)
            PyMem_Free(self.c.items)
            self.c.items = NULL

    cdef int pack(self) except -1:
        """Make _client_scan copy the items (keys: usually small) into one buffer instead of
        holding each object: the GIL-free loops then read them in order, and no
        reference is taken and dropped per item."""
        cdef Py_ssize_t n = self.n if self.n > 0 else 1
        if self.c.items == NULL or self.c.null:
            return 0
        if self.is_list:
            PyMem_Free(self.c.items)
            self.c.items = NULL
        self.packed = True
        self.c.lens = <int32_t *>PyMem_Malloc(n * sizeof(int32_t))
        self.c.offs = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
        self.arena_cap = 16 * n
        self.arena = <char *>PyMem_Malloc(self.arena_cap)
        if self.c.lens == NULL or self.c.offs == NULL or self.arena == NULL:
            raise MemoryError()
        self.c.base = self.arena
        return 0

    cdef inline bint fixed(self) noexcept:
        """Whether every item has the same size (array rows, or all None)."""
        return self.c.null or (self.c.items == NULL and not self.packed)

    cdef inline bint owns_items(self) noexcept:
        """Whether the GIL-free loops read a list snapshot holding a reference per item."""
        return self.is_list and not self.packed

    cdef void release_upto(self, Py_ssize_t upto) noexcept:
        """Drop the snapshot's references to items before ``upto`` (all written: done
        while they are still in cache)."""
        cdef Py_ssize_t i
        cdef PyObject *o
        if not self.is_list or self.packed:
            return
        if upto > self.nowned:
            upto = self.nowned
        for i in range(self.released, upto):
            o = self.c.items[i]
            if o != self.c.none:
                pylog_client_decref(o)
        if upto > self.released:
            self.released = upto

    @staticmethod
    cdef _Column wrap(object data, str what):
        cdef _Column c = _Column.__new__(_Column)
        c.c.none = <PyObject *>None
        if _is_ndarray(data) and pylog_array_type(data) != NPY_OBJECT:
            arr = data
            if arr.ndim == 2 and arr.dtype == _np().uint8:
                arr = _np().ascontiguousarray(arr)
                c.n = arr.shape[0]
                c.c.width = arr.shape[1]
            elif arr.ndim == 1 and arr.dtype.kind in ("S", "V"):
                arr = _np().ascontiguousarray(arr)
                c.n = arr.shape[0]
                c.c.width = arr.dtype.itemsize
            else:
                raise RecordTypeError(
                    f"{what} array must be 2-D uint8 (one row per record) or fixed-width bytes "
                    f"(dtype S<n> or V<n>), not {arr.ndim}-D {arr.dtype}")
            c.keep = arr
            c.c.base = <const char *>pylog_array_data(arr)
            return c
        if isinstance(data, (str, bytes, bytearray, memoryview)):
            raise RecordTypeError(f"{what} must be a sequence of bytes (one per record), not {type(data).__name__}")
        if type(data) is list:
            c.keep = data
            c.is_list = True
            c.n = PyList_GET_SIZE(data)
            c.c.items = <PyObject **>PyMem_Malloc((c.n if c.n > 0 else 1) * sizeof(PyObject *))
            if c.c.items == NULL:
                raise MemoryError()
            return c
        if type(data) is tuple:
            seq = data
        else:
            try:
                seq = tuple(data)
            except TypeError:
                raise RecordTypeError(f"{what} must be a sequence of bytes or a numpy array, "
                                      f"not {type(data).__name__}") from None
        c.keep = seq
        c.n = PySequence_Fast_GET_SIZE(seq)
        c.c.items = PySequence_Fast_ITEMS(seq)
        return c

    @staticmethod
    cdef _Column empty(Py_ssize_t n):
        cdef _Column c = _Column.__new__(_Column)
        c.n = n
        c.c.null = True
        c.c.none = <PyObject *>None
        return c

    cdef object item(self, Py_ssize_t i):
        if self.c.null:
            return None
        if self.packed:
            if self.c.lens[i] < 0:
                return None
            return PyBytes_FromStringAndSize(self.c.base + self.c.offs[i], self.c.lens[i])
        if self.c.items != NULL:
            return <object>self.c.items[i]
        return PyBytes_FromStringAndSize(self.c.base + i * self.c.width, self.c.width)


cdef Py_ssize_t _client_scan(_Column kcol, _Column vcol, Py_ssize_t n, int32_t fixed_p, bint hash_keys,
                             int32_t nparts, Py_ssize_t max_size, int32_t *parts, Py_ssize_t *gcount,
                             Py_ssize_t *gbytes, Py_ssize_t *max_bound) except -2:
    """send_batch's first pass, one read of each item: types checked, list items
    snapshotted, each record's partition (``fixed_p``; else murmur2 of its key when
    ``hash_keys``; else -1 for the sticky partition, or -2 when the caller asks the
    custom partitioner afterwards: ``nparts`` 0) into ``parts``, and per group
    (partition + 1) the records and their bounds.  Raises RecordTypeError /
    RecordTooLargeError naming the first bad record."""
    cdef Py_ssize_t i, kn, vn, size = 0, mb = 0
    cdef int32_t p
    cdef _Column col
    cdef object bad
    cdef uint64_t mod_m = pylog_client_fastmod_m(<uint32_t>nparts) if nparts > 0 else 0
    if kcol.fixed() and vcol.fixed():
        return _client_scan_fixed(kcol, vcol, n, fixed_p, hash_keys, nparts, max_size, parts, gcount, gbytes,
                                  max_bound)
    if kcol.is_list and PyList_GET_SIZE(kcol.keep) != n or vcol.is_list and PyList_GET_SIZE(vcol.keep) != n:
        raise ValueError("the keys or values list changed size during send_batch")
    # Each column's state in locals (what the loop writes cannot alias them): a value is
    # an item of vsrc (a list snapshot takes it into vsnap, with a reference) or a row of
    # vw bytes; a key is copied into the arena from ksrc, or a row of kw bytes, or None.
    cdef PyObject *none = <PyObject *>None
    cdef PyObject *o
    cdef PyObject **vsrc = NULL
    cdef PyObject **vsnap = vcol.c.items if vcol.owns_items() else NULL
    cdef PyObject **ksrc = NULL
    cdef Py_ssize_t vw = vcol.c.width, kw = -1 if kcol.c.null else kcol.c.width
    cdef const char *kp = NULL
    cdef const char *kbase = kcol.c.base
    cdef int32_t *klens = <int32_t *>kcol.c.lens
    cdef int64_t *koffs = <int64_t *>kcol.c.offs
    cdef char *arena = kcol.arena
    cdef char *grown
    cdef Py_ssize_t alen = kcol.arena_len, acap = kcol.arena_cap, cap, taken = 0
    cdef int bad_col = 0             # 1: values[i] is not bytes, 2: keys[i], 3: too large, 4: no memory
    if vcol.c.items != NULL:
        vsrc = PySequence_Fast_ITEMS(vcol.keep)       # a list's items or a tuple's
    if kcol.packed:
        ksrc = PySequence_Fast_ITEMS(kcol.keep)
    i = 0
    while i < n:
        if vsrc != NULL:
            if i + PREFETCH_AHEAD < n:
                pylog_client_prefetch(vsrc[i + PREFETCH_AHEAD])
            o = vsrc[i]
            if o == none:
                vn = -1
            elif PyBytes_CheckExact(<object>o):
                vn = pylog_client_bytes_size(o)
                if vsnap != NULL:
                    pylog_client_incref(o)
            else:
                bad_col = 1
                break
            if vsnap != NULL:
                vsnap[i] = o
                taken = i + 1
        else:
            vn = vw
        if ksrc != NULL:
            if i + PREFETCH_AHEAD < n:
                pylog_client_prefetch(ksrc[i + PREFETCH_AHEAD])
            o = ksrc[i]
            if o == none:
                kn = -1
                klens[i] = -1
            elif PyBytes_CheckExact(<object>o):
                kn = pylog_client_bytes_size(o)
                if kn > acap - alen:
                    cap = 2 * acap + kn
                    grown = <char *>PyMem_Realloc(arena, cap)
                    if grown == NULL:
                        bad_col = 4
                        break
                    arena = grown
                    acap = cap
                kp = pylog_client_bytes_str(o)
                pylog_client_copy(<uint8_t *>arena + alen, <const uint8_t *>kp, kn)
                koffs[i] = alen
                klens[i] = <int32_t>kn
                alen += kn
            else:
                bad_col = 2
                break
        else:
            kn = kw
            kp = kbase + i * kw
        size = RECORD_MAX_OVERHEAD + (kn if kn > 0 else 0) + (vn if vn > 0 else 0)
        if size > max_size:
            bad_col = 3
            break
        if size > mb:
            mb = size
        if fixed_p >= 0:
            p = fixed_p
        elif nparts == 0:
            parts[i] = -2
            i += 1
            continue
        elif kn >= 0 and hash_keys:
            # _broker_key_partition, with the modulo as a multiply.  (Hashed from the
            # object, not from the copy just stored: a load spanning those small stores
            # would stall.)
            p = <int32_t>pylog_client_fastmod(_broker_murmur2(<const uint8_t *>kp, kn) & 0x7fffffff,
                                              mod_m, <uint32_t>nparts)
        else:
            p = -1
        parts[i] = p
        gcount[p + 1] += 1
        gbytes[p + 1] += size
        i += 1
    if vsnap != NULL:
        vcol.nowned = taken          # what the column releases
    if ksrc != NULL:
        kcol.arena = arena
        kcol.c.base = arena
        kcol.arena_len = alen
        kcol.arena_cap = acap
    if bad_col == 4:
        raise MemoryError()
    if bad_col == 1 or bad_col == 2:
        col = vcol if bad_col == 1 else kcol
        bad = col.keep[i]
        raise RecordTypeError(f"{'values' if bad_col == 1 else 'keys'}[{i}] must be bytes or None, not "
                              f"{type(bad).__name__}")
    if bad_col == 3:
        raise RecordTooLargeError(
            f"record {i} of about {size + BATCH_HEADER_SIZE} bytes does not fit a batch of at most "
            f"{max_size + BATCH_HEADER_SIZE} bytes")
    max_bound[0] = mb
    return 0


cdef int32_t *_client_group_order(BatchSendFuture fut, const int32_t *parts, Py_ssize_t n, const Py_ssize_t *gcount,
                                  int32_t nparts) except NULL:
    """send_batch's send order (records grouped by partition + 1, a counting sort; input
    order within each group), kept as ``fut.order``."""
    cdef Py_ssize_t i, g, start = 0
    cdef int32_t *order
    cdef Py_ssize_t *nxt = <Py_ssize_t *>PyMem_Malloc((nparts + 1) * sizeof(Py_ssize_t))
    if nxt == NULL:
        raise MemoryError()
    arr = _np().empty(n, dtype=_np().int32)
    order = <int32_t *>pylog_array_data(arr)
    with nogil:
        for g in range(nparts + 1):
            nxt[g] = start
            start += gcount[g]
        for i in range(n):
            g = parts[i] + 1
            order[nxt[g]] = <int32_t>i
            nxt[g] += 1
    PyMem_Free(nxt)
    fut.order = arr
    return order


cdef Py_ssize_t _client_scan_fixed(_Column kcol, _Column vcol, Py_ssize_t n, int32_t fixed_p, bint hash_keys,
                                   int32_t nparts, Py_ssize_t max_size, int32_t *parts, Py_ssize_t *gcount,
                                   Py_ssize_t *gbytes, Py_ssize_t *max_bound) except -2:
    """_client_scan of columns whose every item has one size (numpy rows, or no keys):
    sizes are checked once, and the only per-record work left is a keyed record's
    murmur2, read straight from the array."""
    cdef Py_ssize_t i, kw = kcol.c.width if not kcol.c.null else 0, size, g
    cdef Py_ssize_t vw = vcol.c.width if not vcol.c.null else 0
    cdef const char *kbase = kcol.c.base
    cdef int32_t p
    cdef uint64_t mod_m
    size = RECORD_MAX_OVERHEAD + kw + vw
    if n == 0:
        return 0
    if size > max_size:
        raise RecordTooLargeError(
            f"record 0 of about {size + BATCH_HEADER_SIZE} bytes does not fit a batch of at most "
            f"{max_size + BATCH_HEADER_SIZE} bytes")
    max_bound[0] = size
    if fixed_p < 0 and nparts == 0:
        p = -2                        # the caller asks the custom partitioner
    elif fixed_p >= 0:
        p = fixed_p
    elif kcol.c.null or not hash_keys:
        p = -1                        # the sticky partition
    else:
        mod_m = pylog_client_fastmod_m(<uint32_t>nparts)
        with nogil:
            for i in range(n):
                p = <int32_t>pylog_client_fastmod(
                    _broker_murmur2(<const uint8_t *>kbase + i * kw, kw) & 0x7fffffff, mod_m, <uint32_t>nparts)
                parts[i] = p
                gcount[p + 1] += 1
        for g in range(1, nparts + 1):
            gbytes[g] = gcount[g] * size
        return 0
    with nogil:
        for i in range(n):
            parts[i] = p
    if p >= -1:
        gcount[p + 1] = n
        gbytes[p + 1] = n * size
    return 0


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
