# Part of pylog._core (included by _core.pyx): the log cleaner's per-record work.
#
# Compaction keeps the latest record of every key.  pylog.storage.cleaner reads the
# segments being cleaned in chunks (pread, never the live mappings) and hands each chunk
# to one of the passes below, which loop over batches and records in C:
#
# - SegmentScan.scan: batch headers, CRC-checked.  Records per segment, the transactional
#   batches (to find aborted and still-open transactions), the last batch of every
#   producer id, the earliest delete horizon, and a fingerprint of the headers; given a
#   map, it also fills it, which is all a clean of a range without transactions needs.
# - OffsetMap.add_batches: the offset map (key digest -> greatest offset) over the
#   records of the range being cleaned; control batches and aborted data are left out.
# - CleanerFilter.filter: every batch again, record by record: a record stays unless a
#   later record has its key, it lies below the log start offset, or it is a tombstone
#   whose batch's delete horizon has passed.  A batch where nothing changes is copied as
#   it is; one that loses records is re-encoded (_cleaner_reencode writes what
#   filter_batch writes, from the mask the filter loop already computed); one that keeps a
#   tombstone (or is the marker of a transaction whose data is gone) and has no delete
#   horizon yet gets one (Kafka's KIP-534: attribute bit 6, baseTimestamp = horizon,
#   record timestamp deltas re-based so every record keeps its timestamp); an
#   idempotent producer's last batch that loses every record is kept as an empty header
#   so the producer's sequence state survives.
#
# Key digests are SipHash-1-3 with 128-bit output under a random per-map key: 16 bytes per
# key whatever its length, and keys a client chooses cannot be made to collide without
# knowing the key (a collision would make the cleaner drop a live record).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_SetItem
from libc.stdint cimport INT32_MAX, INT64_MAX, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy

import os as _cleaner_os

cdef extern from *:
    """
    static inline uint64_t pylog_sip_le64(const uint8_t *p) {
        return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24)
             | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
    }
    #define PYLOG_ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
    #define PYLOG_SIPROUND(v0, v1, v2, v3) do {                                        \
        v0 += v1; v1 = PYLOG_ROTL64(v1, 13); v1 ^= v0; v0 = PYLOG_ROTL64(v0, 32);      \
        v2 += v3; v3 = PYLOG_ROTL64(v3, 16); v3 ^= v2;                                 \
        v0 += v3; v3 = PYLOG_ROTL64(v3, 21); v3 ^= v0;                                 \
        v2 += v1; v1 = PYLOG_ROTL64(v1, 17); v1 ^= v2; v2 = PYLOG_ROTL64(v2, 32);      \
    } while (0)

    /* SipHash-c-d of p[0:n] under key (k0, k1), written from the SipHash paper
     * (Aumasson and Bernstein).  words = 1: 64-bit output, 2: the 128-bit variant. */
    static inline void pylog_siphash(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1,
                                     int c_rounds, int d_rounds, int words, uint64_t *out) {
        uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
        uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
        uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
        uint64_t v3 = k1 ^ 0x7465646279746573ULL;
        uint64_t m, last = ((uint64_t)n) << 56;
        const uint8_t *end = p + (n & ~(size_t)7);
        int i;
        if (words == 2) v1 ^= 0xee;
        for (; p != end; p += 8) {
            m = pylog_sip_le64(p);
            v3 ^= m;
            for (i = 0; i < c_rounds; i++) PYLOG_SIPROUND(v0, v1, v2, v3);
            v0 ^= m;
        }
        switch (n & 7) {
            case 7: last |= (uint64_t)p[6] << 48; /* fall through */
            case 6: last |= (uint64_t)p[5] << 40; /* fall through */
            case 5: last |= (uint64_t)p[4] << 32; /* fall through */
            case 4: last |= (uint64_t)p[3] << 24; /* fall through */
            case 3: last |= (uint64_t)p[2] << 16; /* fall through */
            case 2: last |= (uint64_t)p[1] << 8;  /* fall through */
            case 1: last |= (uint64_t)p[0];       /* fall through */
            default: break;
        }
        v3 ^= last;
        for (i = 0; i < c_rounds; i++) PYLOG_SIPROUND(v0, v1, v2, v3);
        v0 ^= last;
        v2 ^= (words == 2) ? 0xee : 0xff;
        for (i = 0; i < d_rounds; i++) PYLOG_SIPROUND(v0, v1, v2, v3);
        out[0] = v0 ^ v1 ^ v2 ^ v3;
        if (words == 2) {
            v1 ^= 0xdd;
            for (i = 0; i < d_rounds; i++) PYLOG_SIPROUND(v0, v1, v2, v3);
            out[1] = v0 ^ v1 ^ v2 ^ v3;
        }
    }

    /* The key digest of the offset map: constant rounds, so the compiler unrolls them. */
    static inline void pylog_key_digest(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1, uint64_t *out) {
        pylog_siphash(p, n, k0, k1, 1, 3, 2, out);
    }
    """
    void pylog_siphash(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1, int c_rounds,
                       int d_rounds, int words, uint64_t *out) nogil
    void pylog_key_digest(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1, uint64_t *out) nogil


#: Bytes the offset map takes per slot (two digest words and an offset).
OFFSET_MAP_SLOT_BYTES = 24
#: Control record types of transaction markers (Kafka's ControlRecordType).
cdef enum:
    CONTROL_ABORT = 0
    CONTROL_COMMIT = 1
    # Header fields the fingerprint covers: baseOffset, batchLength, leader epoch, magic, CRC.
    FINGERPRINT_BYTES = 21


def siphash(data, k0=0, k1=0, *, int c_rounds=2, int d_rounds=4, int digest_size=8):
    """SipHash-c-d of a bytes-like object under the 128-bit key ``(k0, k1)`` (two unsigned
    64-bit ints, the key's little-endian halves), as bytes of ``digest_size`` 8 or 16 in
    the reference byte order.  For tests against the reference vectors; the cleaner uses
    the 1-3 / 16-byte form (:meth:`OffsetMap.digest`)."""
    cdef _BufferRef ref = acquire_buffer(data)
    cdef uint64_t out[2]
    cdef uint64_t a = k0, b = k1
    if digest_size not in (8, 16):
        raise ValueError(f"digest_size must be 8 or 16, not {digest_size}")
    if c_rounds < 1 or d_rounds < 1 or c_rounds > 8 or d_rounds > 8:
        raise ValueError("c_rounds and d_rounds must be in [1, 8]")
    pylog_siphash(<const uint8_t *>ref.view.buf, <size_t>ref.view.len, a, b, c_rounds, d_rounds,
                  digest_size // 8, out)
    if digest_size == 8:
        return int(out[0]).to_bytes(8, "little")
    return int(out[0]).to_bytes(8, "little") + int(out[1]).to_bytes(8, "little")


# ---------------------------------------------------------------------------------------
# Offset map

cdef struct MapSlot:
    uint64_t h0
    uint64_t h1
    int64_t mark          # offset + 1; 0: empty slot (so calloc gives an empty table)


@cython.final
cdef class OffsetMap:
    """Key digest -> greatest offset seen for that key: the cleaner's offset map.

    An open-addressing table of 24-byte slots (128-bit SipHash-1-3 digest of the key under
    a random per-map key, and the offset), linear probing, kept at most 3/4 full by
    doubling.  Putting an offset keeps the greater of it and the one already there, so
    the order batches are added in does not matter.

    Parameters
    ----------
    expected : int
        Entries to size the table for (it grows past that as needed).
    seed : bytes, optional
        The 16-byte SipHash key; default ``os.urandom(16)``.

    Not thread-safe: one clean fills and reads one map.
    """
    cdef MapSlot *slots
    cdef Py_ssize_t capacity
    cdef Py_ssize_t used
    cdef uint64_t k0
    cdef uint64_t k1

    def __cinit__(self):
        self.slots = NULL
        self.capacity = 0
        self.used = 0

    def __init__(self, Py_ssize_t expected=0, seed=None):
        cdef Py_ssize_t cap = 64
        if seed is None:
            seed = _cleaner_os.urandom(16)
        seed = bytes(seed)
        if len(seed) != 16:
            raise ValueError(f"seed must be 16 bytes, got {len(seed)}")
        self.k0 = int.from_bytes(seed[:8], "little")
        self.k1 = int.from_bytes(seed[8:], "little")
        if expected < 0:
            raise ValueError("expected must be >= 0")
        while cap // 4 * 3 < expected:
            cap *= 2
        self._allocate(cap)

    def __dealloc__(self):
        free(self.slots)
        self.slots = NULL

    cdef int _allocate(self, Py_ssize_t cap) except -1:
        cdef MapSlot *fresh
        if cap > (<Py_ssize_t>1 << 40):
            raise MemoryError(f"offset map of {cap} slots is too large")
        fresh = <MapSlot *>calloc(<size_t>cap, sizeof(MapSlot))
        if fresh == NULL:
            raise MemoryError(f"cannot allocate an offset map of {cap} slots ({cap * sizeof(MapSlot)} bytes)")
        free(self.slots)
        self.slots = fresh
        self.capacity = cap
        self.used = 0
        return 0

    cdef inline MapSlot *_slot(self, uint64_t h0, uint64_t h1) noexcept nogil:
        # The table is never full (load <= 3/4), so the probe ends.
        cdef Py_ssize_t mask = self.capacity - 1
        cdef Py_ssize_t i = <Py_ssize_t>(h0 & <uint64_t>mask)
        cdef MapSlot *s
        while True:
            s = &self.slots[i]
            if s.mark == 0 or (s.h0 == h0 and s.h1 == h1):
                return s
            i = (i + 1) & mask

    cdef int _grow(self) except -1:
        cdef MapSlot *old = self.slots
        cdef Py_ssize_t old_cap = self.capacity, i, n = self.used
        cdef MapSlot *s
        self.slots = NULL
        try:
            self._allocate(old_cap * 2)
        except MemoryError:
            self.slots = old
            self.capacity = old_cap
            raise
        for i in range(old_cap):
            if old[i].mark != 0:
                s = self._slot(old[i].h0, old[i].h1)
                s[0] = old[i]
        self.used = n
        free(old)
        return 0

    cdef inline int put_digest(self, uint64_t h0, uint64_t h1, int64_t offset) except -1:
        cdef MapSlot *s
        if (self.used + 1) * 4 > self.capacity * 3:
            self._grow()
        s = self._slot(h0, h1)
        if s.mark == 0:
            s.h0 = h0
            s.h1 = h1
            s.mark = offset + 1
            self.used += 1
        elif offset + 1 > s.mark:
            s.mark = offset + 1
        return 0

    cdef inline int64_t get_digest(self, uint64_t h0, uint64_t h1) noexcept nogil:
        return self._slot(h0, h1).mark - 1

    cdef inline void digest_of(self, const uint8_t *key, int32_t n, uint64_t *out) noexcept nogil:
        pylog_key_digest(key, <size_t>n, self.k0, self.k1, out)

    # -- Python API (tests, tools) ------------------------------------------------------

    def digest(self, key):
        """The 16-byte digest this map files ``key`` under."""
        cdef _BufferRef ref = acquire_buffer(key)
        cdef uint64_t d[2]
        self.digest_of(<const uint8_t *>ref.view.buf, <int32_t>ref.view.len, d)
        return int(d[0]).to_bytes(8, "little") + int(d[1]).to_bytes(8, "little")

    def put(self, key, int64_t offset):
        """Record ``offset`` for ``key`` (kept if greater than the one there)."""
        cdef _BufferRef ref = acquire_buffer(key)
        cdef uint64_t d[2]
        if offset < 0 or offset == INT64_MAX:
            raise ValueError(f"offset {offset} out of range")
        if ref.view.len > INT32_MAX:
            raise ValueError("key longer than 2 GiB")
        self.digest_of(<const uint8_t *>ref.view.buf, <int32_t>ref.view.len, d)
        self.put_digest(d[0], d[1], offset)

    def get(self, key, default=None):
        """The greatest offset recorded for ``key``, or ``default``."""
        cdef _BufferRef ref = acquire_buffer(key)
        cdef uint64_t d[2]
        cdef int64_t off
        if ref.view.len > INT32_MAX:
            return default
        self.digest_of(<const uint8_t *>ref.view.buf, <int32_t>ref.view.len, d)
        off = self.get_digest(d[0], d[1])
        return default if off < 0 else off

    def __contains__(self, key):
        return self.get(key) is not None

    def __len__(self):
        return self.used

    @property
    def capacity_slots(self):
        return self.capacity

    @property
    def memory_bytes(self):
        """Bytes the table takes."""
        return self.capacity * sizeof(MapSlot)

    def add_batches(self, buf, Py_ssize_t pos, Py_ssize_t end, int64_t min_offset, aborted=None,
                    uint32_t fingerprint=0, Py_ssize_t file_offset=0, max_uncompressed=None):
        """Put every keyed record of the whole batches in ``buf[pos:end]``.

        Control batches, transactional batches whose base offset is in ``aborted`` (a
        sorted int64 array) and records below ``min_offset`` are left out.  Batches are
        CRC-checked.  Stops before a batch that is not wholly in the buffer.

        Returns
        -------
        (position, need, records_added, fingerprint)
            ``position``: where the first unprocessed batch starts; ``need``: the bytes a
            buffer must hold for that batch to be whole (0 when ``position == end``).

        Raises
        ------
        CorruptRecordError
            A batch fails its checks (``file_offset`` + position in the message).
        """
        cdef _BufferRef ref = acquire_buffer(buf)
        cdef _BufferRef aref = None
        cdef const uint8_t *base = <const uint8_t *>ref.view.buf
        cdef const int64_t *ab = NULL
        cdef Py_ssize_t an = 0, need = 0
        cdef BatchHeader h
        cdef BatchStatus st
        cdef const uint8_t *rp
        cdef const uint8_t *rend
        cdef int64_t added = 0
        cdef uint32_t fp = fingerprint
        _cleaner_check_range(ref, pos, end)
        if aborted is not None and len(aborted):
            aref = acquire_int64_column(aborted, -1, "aborted")
            ab = <const int64_t *>aref.view.buf
            an = aref.view.len // 8
        while pos < end:
            st = parse_batch_header(base + pos, end - pos, INT32_MAX, True, &h)
            if st == BATCH_TRUNCATED_HEADER:
                need = BATCH_HEADER_SIZE
                break
            if st == BATCH_TRUNCATED_BODY:
                need = h.size
                break
            if st != BATCH_OK:
                raise _cleaner_batch_error(st, file_offset + pos)
            fp = pylog_crc32c(fp, base + pos, FINGERPRINT_BYTES)
            if ((h.attributes & ATTR_CONTROL) == 0 and h.records_count > 0
                    and h.base_offset + h.last_offset_delta >= min_offset
                    and not ((h.attributes & ATTR_TRANSACTIONAL) != 0
                             and _cleaner_sorted_contains(ab, an, h.base_offset))):
                keep = _cleaner_records(ref, pos, &h, max_uncompressed, file_offset, &rp, &rend)
                added += _cleaner_add_records(self, &h, rp, rend, min_offset)
            pos += h.size
        return pos, need, added, fp


# ---------------------------------------------------------------------------------------
# Helpers shared by the passes

cdef int _cleaner_check_range(_BufferRef ref, Py_ssize_t pos, Py_ssize_t end) except -1:
    if pos < 0 or end < pos or end > ref.view.len:
        raise ValueError(f"range [{pos}, {end}) is outside a buffer of {ref.view.len} bytes")
    return 0


cdef object _cleaner_batch_error(BatchStatus st, Py_ssize_t position):
    return CorruptRecordError(f"{_STATUS_MESSAGES[st]} (at position {position})")


cdef inline bint _cleaner_sorted_contains(const int64_t *a, Py_ssize_t n, int64_t v) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo < n and a[lo] == v


cdef RecordBatch _cleaner_batch(_BufferRef ref, Py_ssize_t pos, const BatchHeader *h,
                                object max_uncompressed, Py_ssize_t file_offset):
    """A RecordBatch view of the (already validated) batch at ``pos``."""
    cdef RecordBatch b = RecordBatch.__new__(RecordBatch)
    init_batch(b, ref, pos, h.size, max_uncompressed)
    if (h.attributes & ATTR_CODEC_MASK) > 4:
        raise CorruptRecordError(f"record batch at position {file_offset + pos} names unknown "
                                 f"compression codec {h.attributes & ATTR_CODEC_MASK}")
    return b


cdef int _cleaner_control_type(RecordBatch b) except -2:
    """The control record type of a control batch (its first record's key), -1 when it has
    no readable key."""
    cdef RecordFields f
    if b._h.records_count <= 0:
        return -1
    b._ensure_records()
    if read_record(b._rp, b._rp + b._rn, &f) != RECORD_OK or f.key_length < 4:
        return -1
    return pylog_be16(f.key + 2)


cdef object _cleaner_records(_BufferRef ref, Py_ssize_t pos, const BatchHeader *h, object max_uncompressed,
                             Py_ssize_t file_offset, const uint8_t **rp, const uint8_t **rend):
    """Point ``rp``/``rend`` at the records section of the batch at ``pos``: into the
    buffer, or into its decompressed copy (a RecordBatch, returned to be kept alive)."""
    cdef RecordBatch b
    cdef const uint8_t *p = <const uint8_t *>ref.view.buf + pos
    if (h.attributes & ATTR_CODEC_MASK) == 0:
        rp[0] = p + BATCH_HEADER_SIZE
        rend[0] = p + h.size
        return None
    b = _cleaner_batch(ref, pos, h, max_uncompressed, file_offset)
    b._ensure_records()
    rp[0] = b._rp
    rend[0] = b._rp + b._rn
    return b


cdef bytes _cleaner_reencode(const BatchHeader *h, const uint8_t *rp, const uint8_t *rend,
                             const uint8_t *mask, int32_t kept, bint set_horizon, int64_t horizon):
    """The batch ``h`` rebuilt from the records where ``mask`` is set (all when NULL).

    Kept records are copied as they are (offset and timestamp deltas included), and the
    header keeps base offset, lastOffsetDelta, leader epoch, producer fields, attributes
    and codec, with maxTimestamp recomputed from the kept records (kept as it was under
    LogAppendTime): what :func:`filter_batch` writes.  With ``set_horizon`` the batch gets
    Kafka's delete horizon instead of its baseTimestamp (attribute bit 6) and each kept
    record's timestamp delta is re-based on it, so every record keeps its timestamp."""
    cdef const uint8_t *p = rp
    cdef const uint8_t *q
    cdef RecordFields f
    cdef RecordStatus st
    cdef int32_t i, prev = -1, length, n = h.records_count
    cdef uint8_t attributes
    cdef int64_t ts_delta, new_delta, ts, max_ts
    cdef bint log_append = (h.attributes & ATTR_LOG_APPEND_TIME) != 0
    cdef Py_ssize_t cap, body, rest
    cdef uint8_t *out = NULL
    cdef uint8_t *o
    if n > (rend - rp) // RECORD_MIN_SIZE:
        raise record_error(RECORD_BAD_COUNT, 0, h)
    max_ts = h.max_timestamp if log_append else INT64_MIN
    # A re-based record grows by at most 9 bytes of timestamp delta and 4 of length varint.
    cap = (rend - rp) + (<Py_ssize_t>n * 13 if set_horizon else 0) + 1
    out = <uint8_t *>malloc(cap)
    if out == NULL:
        raise MemoryError()
    try:
        o = out
        for i in range(n):
            st = read_record(p, rend, &f)
            if st == RECORD_OK and (f.offset_delta <= prev or f.offset_delta > h.last_offset_delta):
                st = RECORD_BAD_OFFSET
            if st != RECORD_OK:
                raise record_error(st, i, h)
            prev = f.offset_delta
            p = f.end
            if mask != NULL and not mask[i]:
                continue
            ts = <int64_t>(<uint64_t>h.base_timestamp + <uint64_t>f.timestamp_delta)
            if not log_append and ts > max_ts:
                max_ts = ts
            if not set_horizon:
                memcpy(o, f.start, f.end - f.start)
                o += f.end - f.start
                continue
            # The length varint, the attributes byte, then the timestamp delta (read_record
            # has checked all three are there).
            q = get_varint(f.start, f.end, &length)
            attributes = q[0]
            q = get_varlong(q + 1, f.end, &ts_delta)
            new_delta = <int64_t>(<uint64_t>ts - <uint64_t>horizon)
            rest = f.end - q
            body = 1 + varint_size(new_delta) + rest
            o = put_varint(o, body)
            o[0] = attributes
            o = put_varint(o + 1, new_delta)
            memcpy(o, q, rest)
            o += rest
        if p != rend:
            raise record_error(RECORD_TRAILING, n, h)
        section = PyBytes_FromStringAndSize(<char *>out, o - out)
    finally:
        free(out)
    if set_horizon:
        return _cleaner_assemble(h, section, h.attributes | ATTR_DELETE_HORIZON, horizon, max_ts, kept)
    return _cleaner_assemble(h, section, h.attributes, h.base_timestamp, max_ts, kept)


cdef int64_t _cleaner_add_records(OffsetMap m, const BatchHeader *h, const uint8_t *p, const uint8_t *end,
                                  int64_t min_offset) except -1:
    """Put every keyed record at or above ``min_offset`` of one batch into ``m``."""
    cdef RecordFields f
    cdef RecordStatus st
    cdef int32_t i, prev = -1
    cdef int64_t offset, added = 0
    cdef uint64_t d[2]
    if h.records_count > (end - p) // RECORD_MIN_SIZE:
        raise record_error(RECORD_BAD_COUNT, 0, h)
    for i in range(h.records_count):
        st = read_record(p, end, &f)
        if st == RECORD_OK and (f.offset_delta <= prev or f.offset_delta > h.last_offset_delta):
            st = RECORD_BAD_OFFSET
        if st != RECORD_OK:
            raise record_error(st, i, h)
        prev = f.offset_delta
        p = f.end
        offset = h.base_offset + f.offset_delta
        if f.key_length < 0 or offset < min_offset:
            continue
        m.digest_of(f.key, f.key_length, d)
        m.put_digest(d[0], d[1], offset)
        added += 1
    if p != end:
        raise record_error(RECORD_TRAILING, h.records_count, h)
    return added


cdef bytes _cleaner_assemble(const BatchHeader *h, bytes section, int16_t attributes,
                             int64_t base_timestamp, int64_t max_timestamp, int32_t count):
    """A batch with ``h``'s offsets and producer fields around a records section
    (compressed here with the attributes' codec)."""
    cdef int codec = attributes & ATTR_CODEC_MASK
    cdef Py_ssize_t size
    cdef uint8_t *o
    if codec != 0:
        section = _codecs.compress(codec, section)
    size = BATCH_HEADER_SIZE + PyBytes_GET_SIZE(section)
    if size > MAX_BATCH_BYTES:
        raise RecordBatchTooLargeError("re-encoded record batch exceeds 2 GiB")
    result = PyBytes_FromStringAndSize(NULL, size)
    o = <uint8_t *>PyBytes_AS_STRING(result)
    memcpy(o + BATCH_HEADER_SIZE, PyBytes_AS_STRING(section), size - BATCH_HEADER_SIZE)
    write_header(o, size, h.base_offset, h.leader_epoch, attributes, h.last_offset_delta,
                 base_timestamp, max_timestamp, h.producer_id, h.producer_epoch,
                 h.base_sequence, count)
    return result


cdef bytes _cleaner_empty(const BatchHeader *h):
    """The header of ``h`` with no records (Kafka keeps one for an idempotent producer's
    last batch): offsets, lastOffsetDelta and producer fields kept, no compression, no
    delete horizon, both timestamps the batch's maxTimestamp."""
    cdef int16_t attributes = h.attributes & ~(ATTR_CODEC_MASK | ATTR_DELETE_HORIZON)
    return _cleaner_assemble(h, b"", attributes, h.max_timestamp, h.max_timestamp, 0)


def set_delete_horizon(batch, int64_t horizon_ms, *, max_uncompressed=None):
    """Re-encode one v2 batch with Kafka's delete horizon: attribute bit 6 set and
    baseTimestamp = ``horizon_ms``, each record's timestamp delta re-based so that every
    record keeps its timestamp; offsets, producer fields, maxTimestamp and codec kept.

    Raises
    ------
    CorruptRecordError
        The batch or its records are malformed.
    """
    cdef RecordBatch b = batch if isinstance(batch, RecordBatch) else RecordBatch(
        batch, max_uncompressed=max_uncompressed)
    b._ensure_records()
    return _cleaner_reencode(&b._h, b._rp, b._rp + b._rn, NULL, b._h.records_count, True, horizon_ms)


def empty_batch(batch):
    """The empty (header-only) form of a batch that the cleaner keeps for an idempotent
    producer's last batch."""
    cdef RecordBatch b = batch if isinstance(batch, RecordBatch) else RecordBatch(batch)
    return _cleaner_empty(&b._h)


def batches_fingerprint(buf, Py_ssize_t pos, Py_ssize_t end, uint32_t fingerprint=0):
    """Fold the first 21 header bytes (base offset, length, leader epoch, magic, CRC) of
    each whole batch in ``buf[pos:end]`` into a CRC32C; the cleaner compares this with
    what its passes read to detect a segment changed under it.  Returns
    ``(position, fingerprint)``, position being where the scan stopped."""
    cdef _BufferRef ref = acquire_buffer(buf)
    cdef const uint8_t *base = <const uint8_t *>ref.view.buf
    cdef int32_t blen
    cdef Py_ssize_t size
    cdef uint32_t fp = fingerprint
    _cleaner_check_range(ref, pos, end)
    with nogil:
        while end - pos >= BATCH_HEADER_SIZE:
            blen = pylog_be32(base + pos + BATCH_LENGTH)
            size = <Py_ssize_t>blen + BATCH_LENGTH_OVERHEAD
            if blen < BATCH_MIN_LENGTH or size > end - pos:
                break
            fp = pylog_crc32c(fp, base + pos, FINGERPRINT_BYTES)
            pos += size
    return pos, fp


# ---------------------------------------------------------------------------------------
# Pass 0: headers

@cython.final
cdef class SegmentScan:
    """What the cleaner learns from one segment's batch headers (see :meth:`scan`).

    Attributes
    ----------
    batches, records, size_bytes : int
        Counted over the scanned batches.
    min_horizon : int
        Earliest delete horizon of a batch that has one (``2**63 - 1``: none).
    fingerprint : int
        CRC32C folded over the batches' first 21 header bytes.
    last_batches : dict
        Producer id -> base offset of its last data batch in the segment.
    transactions : list
        ``(base_offset, last_offset, producer_id, is_control, control_type)`` of every
        transactional batch, in offset order (control_type -1 for data batches).
    """
    cdef readonly int64_t batches
    cdef readonly int64_t records
    cdef readonly int64_t size_bytes
    cdef readonly int64_t min_horizon
    cdef readonly uint32_t fingerprint
    cdef readonly dict last_batches
    cdef readonly list transactions
    cdef object max_uncompressed

    def __init__(self, max_uncompressed=None):
        self.batches = 0
        self.records = 0
        self.size_bytes = 0
        self.min_horizon = INT64_MAX
        self.fingerprint = 0
        self.last_batches = {}
        self.transactions = []
        self.max_uncompressed = max_uncompressed

    def scan(self, buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t file_offset=0,
             OffsetMap offset_map=None, int64_t min_offset=0):
        """Scan the whole batches of ``buf[pos:end]`` (CRC-checked).  Returns
        ``(position, need)`` as :meth:`OffsetMap.add_batches` does.

        With ``offset_map``, also put the keyed records at or above ``min_offset`` of
        every data batch (transactional ones included) into it: the map a clean needs
        when the range turns out to hold no transactions, built in the same read."""
        cdef _BufferRef ref = acquire_buffer(buf)
        cdef const uint8_t *base = <const uint8_t *>ref.view.buf
        cdef Py_ssize_t need = 0
        cdef BatchHeader h
        cdef BatchStatus st
        cdef RecordBatch b
        cdef int ctype
        cdef const uint8_t *rp
        cdef const uint8_t *rend
        _cleaner_check_range(ref, pos, end)
        while pos < end:
            st = parse_batch_header(base + pos, end - pos, INT32_MAX, True, &h)
            if st == BATCH_TRUNCATED_HEADER:
                need = BATCH_HEADER_SIZE
                break
            if st == BATCH_TRUNCATED_BODY:
                need = h.size
                break
            if st != BATCH_OK:
                raise _cleaner_batch_error(st, file_offset + pos)
            self.fingerprint = pylog_crc32c(self.fingerprint, base + pos, FINGERPRINT_BYTES)
            self.batches += 1
            self.records += h.records_count
            self.size_bytes += h.size
            if (h.attributes & ATTR_DELETE_HORIZON) != 0 and h.base_timestamp < self.min_horizon:
                self.min_horizon = h.base_timestamp
            if h.producer_id >= 0 and (h.attributes & ATTR_CONTROL) == 0:
                PyDict_SetItem(self.last_batches, h.producer_id, h.base_offset)
            if (h.attributes & ATTR_TRANSACTIONAL) != 0:
                ctype = -1
                if (h.attributes & ATTR_CONTROL) != 0:
                    b = _cleaner_batch(ref, pos, &h, self.max_uncompressed, file_offset)
                    ctype = _cleaner_control_type(b)
                self.transactions.append((h.base_offset, h.base_offset + h.last_offset_delta,
                                          h.producer_id, (h.attributes & ATTR_CONTROL) != 0, ctype))
            if (offset_map is not None and (h.attributes & ATTR_CONTROL) == 0 and h.records_count > 0
                    and h.base_offset + h.last_offset_delta >= min_offset):
                keep = _cleaner_records(ref, pos, &h, self.max_uncompressed, file_offset, &rp, &rend)
                _cleaner_add_records(offset_map, &h, rp, rend, min_offset)
            pos += h.size
        return pos, need


# ---------------------------------------------------------------------------------------
# Pass 2: filter

@cython.final
cdef class CleanerFilter:
    """The filter pass of one clean: decides record by record what stays and writes the
    surviving batches (see the top of this file for the rules).

    Parameters
    ----------
    offset_map : OffsetMap
        Greatest offset per key over the range being cleaned.
    log_start_offset : int
        Records below it are dropped.
    now_ms : int
        The clean's time: tombstones and markers whose delete horizon is at or before it
        are dropped.
    delete_retention_ms : int
        Horizon given to batches that keep a tombstone and have none yet:
        ``now_ms + delete_retention_ms``.
    aborted : int64 array, optional
        Sorted base offsets of the transactional data batches of aborted transactions
        (dropped whole).
    last_batches : int64 array, optional
        Sorted base offsets of each producer id's last batch in the range (kept as an
        empty header when all their records go).
    max_uncompressed : int, optional
        Decompression bound for compressed batches.

    Attributes (counters over everything filtered)
    ----------------------------------------------
    records_kept, records_removed, batches_kept, batches_removed, batches_rewritten,
    tombstones_removed, markers_removed, horizons_set, empty_batches, bytes_read,
    bytes_written, min_horizon (earliest delete horizon among kept tombstones and
    markers; ``2**63 - 1`` when none), fingerprint (of the input, settable per segment).
    """
    cdef OffsetMap map
    cdef readonly int64_t log_start_offset
    cdef readonly int64_t now_ms
    cdef readonly int64_t delete_horizon_ms
    cdef _BufferRef _aborted
    cdef _BufferRef _last
    cdef const int64_t *ab
    cdef Py_ssize_t an
    cdef const int64_t *lb
    cdef Py_ssize_t ln
    cdef dict txn_retained
    cdef object max_uncompressed
    cdef readonly int64_t records_kept
    cdef readonly int64_t records_removed
    cdef readonly int64_t batches_kept
    cdef readonly int64_t batches_removed
    cdef readonly int64_t batches_rewritten
    cdef readonly int64_t tombstones_removed
    cdef readonly int64_t markers_removed
    cdef readonly int64_t horizons_set
    cdef readonly int64_t empty_batches
    cdef readonly int64_t bytes_read
    cdef readonly int64_t bytes_written
    cdef readonly int64_t min_horizon
    cdef public uint32_t fingerprint
    cdef uint8_t *mask
    cdef Py_ssize_t mask_cap
    cdef uint8_t *out
    cdef Py_ssize_t out_len
    cdef Py_ssize_t out_cap

    def __cinit__(self):
        self.mask = NULL
        self.out = NULL

    def __init__(self, OffsetMap offset_map not None, int64_t log_start_offset, int64_t now_ms,
                 int64_t delete_retention_ms, aborted=None, last_batches=None, max_uncompressed=None):
        if delete_retention_ms < 0:
            raise ValueError("delete_retention_ms must be >= 0")
        self.map = offset_map
        self.log_start_offset = log_start_offset
        self.now_ms = now_ms
        self.delete_horizon_ms = (INT64_MAX if now_ms > INT64_MAX - delete_retention_ms
                                  else now_ms + delete_retention_ms)
        self.txn_retained = {}
        self.max_uncompressed = max_uncompressed
        self.min_horizon = INT64_MAX
        self.ab = NULL
        self.lb = NULL
        self.an = self.ln = 0
        if aborted is not None and len(aborted):
            self._aborted = acquire_int64_column(aborted, -1, "aborted")
            self.ab = <const int64_t *>self._aborted.view.buf
            self.an = self._aborted.view.len // 8
        if last_batches is not None and len(last_batches):
            self._last = acquire_int64_column(last_batches, -1, "last_batches")
            self.lb = <const int64_t *>self._last.view.buf
            self.ln = self._last.view.len // 8

    def __dealloc__(self):
        free(self.mask)
        free(self.out)

    cdef int _emit(self, const uint8_t *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef uint8_t *grown
        if n > self.out_cap - self.out_len:
            cap = self.out_cap if self.out_cap else 65536
            while cap - self.out_len < n:
                cap *= 2
            grown = <uint8_t *>realloc(self.out, cap)
            if grown == NULL:
                raise MemoryError()
            self.out = grown
            self.out_cap = cap
        memcpy(self.out + self.out_len, p, n)
        self.out_len += n
        self.bytes_written += n
        return 0

    cdef int _emit_bytes(self, bytes data) except -1:
        return self._emit(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef int _ensure_mask(self, Py_ssize_t n) except -1:
        cdef uint8_t *grown
        if n > self.mask_cap:
            grown = <uint8_t *>realloc(self.mask, n)
            if grown == NULL:
                raise MemoryError()
            self.mask = grown
            self.mask_cap = n
        return 0

    def filter(self, buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t out_limit, Py_ssize_t file_offset=0):
        """Filter the whole batches of ``buf[pos:end]``, stopping early once the output
        holds ``out_limit`` bytes.

        Returns
        -------
        (position, need, output)
            ``position``/``need`` as :meth:`OffsetMap.add_batches`; ``output``: the
            surviving batches (bytes, possibly empty).
        """
        cdef _BufferRef ref = acquire_buffer(buf)
        cdef const uint8_t *base = <const uint8_t *>ref.view.buf
        cdef Py_ssize_t need = 0
        cdef BatchHeader h
        cdef BatchStatus st
        _cleaner_check_range(ref, pos, end)
        self.out_len = 0
        while pos < end:
            st = parse_batch_header(base + pos, end - pos, INT32_MAX, True, &h)
            if st == BATCH_TRUNCATED_HEADER:
                need = BATCH_HEADER_SIZE
                break
            if st == BATCH_TRUNCATED_BODY:
                need = h.size
                break
            if st != BATCH_OK:
                raise _cleaner_batch_error(st, file_offset + pos)
            self.fingerprint = pylog_crc32c(self.fingerprint, base + pos, FINGERPRINT_BYTES)
            self.bytes_read += h.size
            self._filter_batch(ref, pos, &h, file_offset)
            pos += h.size
            if self.out_len >= out_limit:
                break
        output = PyBytes_FromStringAndSize(<char *>self.out, self.out_len) if self.out_len else b""
        self.out_len = 0
        return pos, need, output

    cdef int _drop(self, const BatchHeader *h) except -1:
        self.batches_removed += 1
        self.records_removed += h.records_count
        return 0

    cdef int _keep_whole(self, const uint8_t *p, const BatchHeader *h) except -1:
        self.batches_kept += 1
        self.records_kept += h.records_count
        return self._emit(p, h.size)

    cdef int _filter_batch(self, _BufferRef ref, Py_ssize_t pos, const BatchHeader *h,
                           Py_ssize_t file_offset) except -1:
        cdef const uint8_t *p = <const uint8_t *>ref.view.buf + pos
        cdef bint has_horizon = (h.attributes & ATTR_DELETE_HORIZON) != 0
        cdef bint horizon_passed = has_horizon and h.base_timestamp <= self.now_ms
        cdef bint retained, keep, set_horizon
        cdef RecordFields f
        cdef RecordStatus st
        cdef const uint8_t *rp
        cdef const uint8_t *rend
        cdef int32_t i, prev = -1, n = h.records_count, kept = 0, tombstones_kept = 0
        cdef int32_t tombstones_dropped = 0
        cdef int64_t offset, latest
        cdef uint64_t d[2]
        if h.base_offset + h.last_offset_delta < self.log_start_offset:
            return self._drop(h)

        if (h.attributes & ATTR_CONTROL) != 0:
            if (h.attributes & ATTR_TRANSACTIONAL) == 0:
                return self._keep_whole(p, h)
            # A transaction marker: needed while its transaction has data in the log.
            retained = self.txn_retained.pop(h.producer_id, False)
            if retained:
                return self._keep_whole(p, h)
            if horizon_passed:
                self.markers_removed += 1
                return self._drop(h)
            if has_horizon:
                self._note_horizon(h.base_timestamp)
                return self._keep_whole(p, h)
            keepalive = _cleaner_records(ref, pos, h, self.max_uncompressed, file_offset, &rp, &rend)
            self._emit_bytes(_cleaner_reencode(h, rp, rend, NULL, n, True, self.delete_horizon_ms))
            self._note_horizon(self.delete_horizon_ms)
            self.horizons_set += 1
            self.batches_rewritten += 1
            self.batches_kept += 1
            self.records_kept += n
            return 0

        if (h.attributes & ATTR_TRANSACTIONAL) != 0 and _cleaner_sorted_contains(self.ab, self.an, h.base_offset):
            return self._drop(h)

        keepalive = _cleaner_records(ref, pos, h, self.max_uncompressed, file_offset, &rp, &rend)
        if n > (rend - rp) // RECORD_MIN_SIZE:
            raise record_error(RECORD_BAD_COUNT, 0, h)
        self._ensure_mask(n if n > 0 else 1)
        for i in range(n):
            st = read_record(rp, rend, &f)
            if st == RECORD_OK and (f.offset_delta <= prev or f.offset_delta > h.last_offset_delta):
                st = RECORD_BAD_OFFSET
            if st != RECORD_OK:
                raise record_error(st, i, h)
            prev = f.offset_delta
            rp = f.end
            offset = h.base_offset + f.offset_delta
            keep = True
            if offset < self.log_start_offset:
                keep = False
            elif f.key_length >= 0:
                self.map.digest_of(f.key, f.key_length, d)
                latest = self.map.get_digest(d[0], d[1])
                if latest > offset:
                    keep = False
                elif f.value_length < 0:
                    # The latest record of its key is a tombstone.
                    if horizon_passed:
                        keep = False
                        tombstones_dropped += 1
                    else:
                        tombstones_kept += 1
            self.mask[i] = keep
            kept += keep
        if rp != rend:
            raise record_error(RECORD_TRAILING, n, h)
        self.tombstones_removed += tombstones_dropped

        if (h.attributes & ATTR_TRANSACTIONAL) != 0 and kept > 0:
            self.txn_retained[h.producer_id] = True
        if kept == 0:
            if h.producer_id >= 0 and _cleaner_sorted_contains(self.lb, self.ln, h.base_offset):
                # The producer's last batch: its header keeps the producer's sequence and
                # epoch in the log after every record is gone.
                self._emit_bytes(_cleaner_empty(h))
                self.empty_batches += 1
                self.batches_kept += 1
                self.records_removed += n
                return 0
            return self._drop(h)
        set_horizon = tombstones_kept > 0 and not has_horizon
        if tombstones_kept:
            self._note_horizon(self.delete_horizon_ms if set_horizon else h.base_timestamp)
        if kept == n and not set_horizon:
            return self._keep_whole(p, h)
        # Back to the start of the records section for the second walk.
        if keepalive is not None:
            rp = (<RecordBatch>keepalive)._rp
            rend = rp + (<RecordBatch>keepalive)._rn
        else:
            rp = p + BATCH_HEADER_SIZE
            rend = p + h.size
        self._emit_bytes(_cleaner_reencode(h, rp, rend, self.mask if kept < n else NULL, kept,
                                           set_horizon, self.delete_horizon_ms))
        if set_horizon:
            self.horizons_set += 1
        self.batches_rewritten += 1
        self.batches_kept += 1
        self.records_kept += kept
        self.records_removed += n - kept
        return 0

    cdef inline void _note_horizon(self, int64_t horizon) noexcept:
        if horizon < self.min_horizon:
            self.min_horizon = horizon
