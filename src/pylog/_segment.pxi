# Part of pylog._core (included by _core.pyx).
#
# Segment hot paths: validating an append, writing it into the active segment (pwritev,
# or a memcpy into the mapping when small) with only the header fields a Kafka broker
# writes rewritten, scanning batch headers forward (reads, offset and timestamp lookups,
# truncation), and recovery: a CRC-checked scan of a segment that rebuilds its sparse
# indexes in the same pass.  pylog.storage.segment
# holds the files and mappings; these functions get the mapped buffers and the number of
# valid bytes, and never read past either.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.errno cimport EINTR, EIO, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.types cimport off_t
from posix.uio cimport iovec, pwritev
from posix.unistd cimport pwrite

import os as _segment_os

from pylog.errors import (CorruptRecordError, InvalidRecordError, KafkaStorageError,
                          RecordBatchTooLargeError, RecordTooLargeError)

cdef int64_t MAX_RELATIVE_OFFSET = 0xFFFFFFFF


cdef int _get_buffer(object buf, Py_buffer *view, bint writable) except -1:
    if isinstance(buf, str):
        raise TypeError("record batches are bytes-like (bytes, bytearray, memoryview, mmap), not str")
    try:
        PyObject_GetBuffer(buf, view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    except BufferError:
        raise
    except TypeError:
        raise TypeError(f"expected a bytes-like object (bytes, bytearray, memoryview), "
                        f"got {type(buf).__name__}") from None
    return 0


cdef object _batch_error(BatchStatus st, BatchHeader *h, Py_ssize_t index, Py_ssize_t position,
                         Py_ssize_t max_batch_size):
    if st == BATCH_BAD_LENGTH and h.batch_length >= BATCH_MIN_LENGTH:
        return RecordTooLargeError(
            f"record batch {index} (at byte {position}) is {<int64_t>h.batch_length + 12} bytes, "
            f"larger than max_message_bytes={max_batch_size}; raise the log's max_message_bytes "
            f"or send smaller batches")
    return CorruptRecordError(f"{_STATUS_MESSAGES[st]} (batch {index}, at byte {position})")


ctypedef struct BatchSetInfo:
    Py_ssize_t batches
    Py_ssize_t size
    int64_t records
    int64_t first_base
    int64_t last_given
    int64_t span
    int64_t max_ts
    int64_t max_ts_rel
    int64_t max_ts_last
    int64_t first_max_ts
    bint monotonic


cdef void _validate_init(BatchSetInfo *info) noexcept nogil:
    info.batches = 0
    info.size = 0
    info.records = 0
    info.first_base = -1
    info.last_given = -1
    info.span = 0
    info.max_ts = -1
    info.max_ts_rel = -1
    info.max_ts_last = -1
    info.first_max_ts = -1
    info.monotonic = True


cdef BatchStatus _validate_more(const uint8_t *p, Py_ssize_t end, Py_ssize_t max_batch_size,
                                BatchSetInfo *info, BatchHeader *h) noexcept nogil:
    # Validate the whole batches of p[0:end], which follow info.size bytes already
    # validated into *info (after _validate_init).  On failure info.batches / info.size
    # say which batch, at which byte of the whole.
    cdef BatchStatus st
    cdef Py_ssize_t pos = 0, start = info.size
    cdef int64_t prev_last = info.last_given
    while pos < end:
        info.size = start + pos
        st = parse_batch_header(p + pos, end - pos, max_batch_size, True, h)
        if st != BATCH_OK:
            return st
        if info.batches == 0:
            info.first_base = h.base_offset
            info.first_max_ts = h.max_timestamp
        elif h.base_offset <= prev_last:
            info.monotonic = False
        prev_last = h.base_offset + h.last_offset_delta
        info.last_given = prev_last
        if h.max_timestamp > info.max_ts:
            info.max_ts = h.max_timestamp
            info.max_ts_rel = info.span + h.last_offset_delta
            info.max_ts_last = prev_last
        info.span += <int64_t>h.last_offset_delta + 1
        info.records += h.records_count
        pos += h.size
        info.batches += 1
    info.size = start + pos
    return BATCH_OK


cdef BatchStatus _validate_views(Py_buffer *views, Py_ssize_t n, Py_ssize_t max_batch_size,
                                 BatchSetInfo *info, BatchHeader *h) noexcept nogil:
    cdef BatchStatus st = BATCH_OK
    cdef Py_ssize_t i
    for i in range(n):
        st = _validate_more(<const uint8_t *>views[i].buf, views[i].len, max_batch_size, info, h)
        if st != BATCH_OK:
            break
    return st


cdef int _validate_views_or_raise(Py_buffer *views, Py_ssize_t n, Py_ssize_t max_batch_size,
                                  BatchSetInfo *info) except -1:
    # Validate the concatenation of views[0:n] (each holds whole batches); raise the
    # first batch's error, with where it is.
    cdef BatchHeader h
    cdef BatchStatus st = BATCH_OK
    cdef Py_ssize_t i, total = 0
    for i in range(n):
        total += views[i].len
    if total == 0:
        raise CorruptRecordError("empty append: expected at least one record batch")
    _validate_init(info)
    if total >= GIL_RELEASE_BYTES:
        with nogil:
            st = _validate_views(views, n, max_batch_size, info, &h)
    else:
        st = _validate_views(views, n, max_batch_size, info, &h)
    if st != BATCH_OK:
        raise _batch_error(st, &h, info.batches, info.size, max_batch_size)
    return 0


def validate_batches(src, Py_ssize_t max_batch_size):
    """Validate ``src``: one or more whole, concatenated v2 batches.

    Every batch is checked (size within ``max_batch_size``, magic, counts, CRC32C) and the
    batches must cover ``src`` exactly.  Returns a tuple

    ``(batches, size, records, first_base_offset, last_offset, offset_span,
      max_timestamp, max_timestamp_rel, max_timestamp_batch_last, first_max_timestamp,
      monotonic)``

    where ``offset_span`` is the number of offsets the batches take when offsets are
    assigned (sum of lastOffsetDelta + 1), ``max_timestamp_rel`` is the last offset of the
    batch holding the largest timestamp, relative to the first assigned offset (0-based,
    for assigned offsets), ``max_timestamp_batch_last`` the same batch's last offset as
    given, and ``monotonic`` says whether the given offsets strictly increase from batch
    to batch (what a replica append needs).

    Raises CorruptRecordError, RecordTooLargeError (a batch over ``max_batch_size``),
    TypeError (not bytes-like).
    """
    cdef Py_buffer view
    cdef BatchSetInfo info
    _get_buffer(src, &view, False)
    try:
        _validate_views_or_raise(&view, 1, max_batch_size, &info)
    finally:
        PyBuffer_Release(&view)
    return (info.batches, info.size, info.records, info.first_base, info.last_given, info.span,
            info.max_ts, info.max_ts_rel, info.max_ts_last, info.first_max_ts, info.monotonic)


cdef extern from *:
    """
    #define pylog_compiler_fence() __atomic_signal_fence(__ATOMIC_SEQ_CST)
    """
    void pylog_compiler_fence() nogil


cdef Py_ssize_t _write_batches(uint8_t *d, const uint8_t *s, Py_ssize_t size, int64_t *offset,
                               bint assign_offsets, bint set_leader_epoch, int32_t leader_epoch,
                               int64_t log_append_time) noexcept nogil:
    # Returns -1 when done, else the position of a batch whose length is inconsistent.
    # ``offset``: the first batch's assigned offset in, the next one's out.
    cdef Py_ssize_t pos = 0, bsize
    cdef int64_t next_offset = offset[0]
    cdef int32_t blen, delta
    cdef int16_t attrs
    cdef uint8_t *b
    while pos < size:
        if size - pos < BATCH_HEADER_SIZE:
            return pos
        blen = pylog_be32(s + pos + BATCH_LENGTH)
        bsize = <Py_ssize_t>blen + BATCH_LENGTH_OVERHEAD
        if blen < BATCH_MIN_LENGTH or bsize > size - pos:
            return pos
        b = d + pos
        # Everything after batchLength first; baseOffset and batchLength last.  The bytes
        # past the valid size are zero, so until the length lands a crash leaves a zero
        # length there, which recovery reads as the end: a batch is never seen torn, nor
        # with the producer's base offset instead of the assigned one.
        memcpy(b + BATCH_LEADER_EPOCH, s + pos + BATCH_LEADER_EPOCH, <size_t>(bsize - BATCH_LEADER_EPOCH))
        delta = pylog_be32(b + BATCH_LAST_OFFSET_DELTA)
        if set_leader_epoch:
            pylog_put_be32(b + BATCH_LEADER_EPOCH, leader_epoch)
        if log_append_time >= 0:
            attrs = pylog_be16(b + BATCH_ATTRIBUTES)
            pylog_put_be16(b + BATCH_ATTRIBUTES, <int16_t>(attrs | ATTR_LOG_APPEND_TIME))
            pylog_put_be64(b + BATCH_MAX_TIMESTAMP, log_append_time)
            pylog_put_be32(b + BATCH_CRC, <int32_t>pylog_crc32c(
                0, b + BATCH_ATTRIBUTES, <size_t>(bsize - BATCH_ATTRIBUTES)))
        pylog_compiler_fence()
        if assign_offsets:
            pylog_put_be64(b + BATCH_BASE_OFFSET, next_offset)
            next_offset += <int64_t>delta + 1
        else:
            memcpy(b + BATCH_BASE_OFFSET, s + pos + BATCH_BASE_OFFSET, 8)
        pylog_compiler_fence()
        memcpy(b + BATCH_LENGTH, s + pos + BATCH_LENGTH, 4)
        pos += bsize
    offset[0] = next_offset
    return -1


cdef Py_ssize_t _write_views(uint8_t *d, Py_buffer *views, Py_ssize_t n_views, int64_t first,
                             bint assign_offsets, bint set_leader_epoch, int32_t leader_epoch,
                             int64_t log_append_time) noexcept nogil:
    # _write_batches over the concatenation of views[0:n_views]; -1 when done, else the
    # position (in the whole) of a batch whose length is inconsistent.
    cdef Py_ssize_t at = 0, bad, i
    cdef int64_t next_offset = first
    for i in range(n_views):
        bad = _write_batches(d + at, <const uint8_t *>views[i].buf, views[i].len, &next_offset,
                             assign_offsets, set_leader_epoch, leader_epoch, log_append_time)
        if bad >= 0:
            return at + bad
        at += views[i].len
    return -1


cdef extern from *:
    """
    /* A tuple subclass instance (no extra fields: checked when the type is set) holding
     * the items of ``items``: what tuple.__new__(cls, items) makes, without the call. */
    static PyObject *pylog_tuple_as(PyObject *type, PyObject *items) {
        PyTypeObject *t = (PyTypeObject *)type;
        Py_ssize_t n = PyTuple_GET_SIZE(items), i;
        PyObject *o = t->tp_alloc(t, n);
        if (o == NULL) return NULL;
        for (i = 0; i < n; i++) {
            PyObject *v = PyTuple_GET_ITEM(items, i);
            Py_INCREF(v);
            PyTuple_SET_ITEM(o, i, v);
        }
        return o;
    }
    """
    object pylog_tuple_as(object type, object items)


cdef object _append_info_type = None


def set_append_info_type(cls):
    """The tuple subclass (pylog.storage.LogAppendInfo) that
    :meth:`SegmentAppender.log_append` and Log.append return: a named tuple (no instance
    dict or slots of its own)."""
    global _append_info_type
    if not (isinstance(cls, type) and issubclass(cls, tuple)):
        raise TypeError("expected a tuple subclass")
    if cls.__basicsize__ != tuple.__basicsize__ or cls.__itemsize__ != tuple.__itemsize__:
        raise TypeError("expected a tuple subclass without instance fields (a named tuple)")
    _append_info_type = cls


cdef inline object _append_info(tuple fields):
    if _append_info_type is None:
        return fields
    return pylog_tuple_as(_append_info_type, fields)


cdef extern from "<fcntl.h>" nogil:
    int posix_fallocate(int fd, int64_t offset, int64_t length)

cdef extern from "<errno.h>":
    enum:
        ENOSPC
        EDQUOT

cdef extern from *:
    """
    #include <sys/mman.h>
    #include <errno.h>
    #ifndef MADV_POPULATE_WRITE
    #define MADV_POPULATE_WRITE 23   /* Linux 5.14 */
    #endif
    /* Make the pages of [start, end) of a shared file mapping writable without a fault:
       allocate their blocks now.  0: done; -1: the file system has no room (a write
       there would raise SIGBUS); 1: the kernel cannot do it (older than 5.14). */
    static int pylog_populate_write(char *base, Py_ssize_t len, Py_ssize_t start, Py_ssize_t end) {
        Py_ssize_t page = 4096, a = start & ~(page - 1), b = (end + page - 1) & ~(page - 1);
        if (b > len) b = len;
        if (a >= b) return 0;
        if (madvise(base + a, (size_t)(b - a), MADV_POPULATE_WRITE) == 0) return 0;
        return (errno == EINVAL || errno == ENOSYS) ? 1 : -1;
    }
    """
    int pylog_populate_write(char *base, Py_ssize_t len, Py_ssize_t start, Py_ssize_t end) nogil

cdef enum:
    PREALLOCATE_CHUNK = 4 * 1024 * 1024
    # Index pages are allocated this far ahead of the entry being written (1024 offset
    # or 682 time entries: one system call per 4-8 MiB of log at the default interval).
    # Not more: every active segment zero-fills this much of each index up front, which
    # at 64 KiB was a fifth of the broker's CPU producing to 1000 new partitions.
    INDEX_POPULATE_CHUNK = 8 * 1024
    # Batches per pwritev call: two iovecs each (the rewritten header, the rest as given).
    WRITE_GROUP = 256
    HEADER_SLOT = 64
    # Appends smaller than this are copied into the mapping instead (below): measured
    # crossover between a memcpy (with its page faults) and a pwritev system call.
    PWRITE_MIN_BYTES = 1536


cdef int _pwrite_all(int fd, iovec *iov, int count, int64_t offset) noexcept nogil:
    # Write every byte of iov[0:count] at offset: retries EINTR and short writes (the
    # iovecs are advanced in place).  Returns 0, or the errno of the failure.
    cdef ssize_t n
    cdef int i = 0
    while i < count:
        n = pwritev(fd, iov + i, count - i, <off_t>offset)
        if n < 0:
            if errno == EINTR:
                continue
            return errno if errno else EIO
        if n == 0:
            return EIO
        offset += n
        while i < count and <size_t>n >= iov[i].iov_len:
            n -= <ssize_t>iov[i].iov_len
            i += 1
        if i < count and n > 0:
            iov[i].iov_base = <void *>(<uint8_t *>iov[i].iov_base + n)
            iov[i].iov_len -= <size_t>n
    return 0


cdef Py_ssize_t _pwrite_batches(int fd, int64_t file_position, uint8_t *headers,
                                Py_buffer *views, Py_ssize_t n_views, int64_t base_offset,
                                bint assign_offsets, bint set_leader_epoch, int32_t leader_epoch,
                                int64_t log_append_time, int *error) noexcept nogil:
    # The pwritev form of _write_batches, over the concatenation of views[0:n_views]: each
    # batch goes out as its header, rewritten in ``headers`` (WRITE_GROUP slots of
    # HEADER_SLOT bytes), plus the rest of the batch straight from its view: the kernel's
    # copy into the page cache is the only pass over the bytes, and one pwritev takes up to
    # WRITE_GROUP batches from any number of views.  Returns -1 when done, the position (in
    # the whole) of a batch whose length is inconsistent, or -2 with ``error`` set to the
    # errno of a failed write.
    cdef iovec iov[2 * WRITE_GROUP]
    cdef Py_ssize_t pos = 0, size = 0, group_start = 0, done = 0, bsize, v = 0
    cdef int64_t next_offset = base_offset
    cdef int32_t blen
    cdef int16_t attrs
    cdef int n_iov = 0, k = 0, rc
    cdef uint8_t *h
    cdef const uint8_t *s = NULL
    cdef uint32_t crc
    while True:
        if pos == size:                        # the next view (skipping empty ones)
            done += size
            if v == n_views:
                break
            s = <const uint8_t *>views[v].buf
            size = views[v].len
            pos = 0
            v += 1
            continue
        if k == WRITE_GROUP:
            rc = _pwrite_all(fd, iov, n_iov, file_position + group_start)
            if rc != 0:
                error[0] = rc
                return -2
            group_start = done + pos
            n_iov = 0
            k = 0
        if size - pos < BATCH_HEADER_SIZE:
            return done + pos
        blen = pylog_be32(s + pos + BATCH_LENGTH)
        bsize = <Py_ssize_t>blen + BATCH_LENGTH_OVERHEAD
        if blen < BATCH_MIN_LENGTH or bsize > size - pos:
            return done + pos
        h = headers + k * HEADER_SLOT
        memcpy(h, s + pos, BATCH_HEADER_SIZE)
        if assign_offsets:
            pylog_put_be64(h + BATCH_BASE_OFFSET, next_offset)
            next_offset += <int64_t>pylog_be32(h + BATCH_LAST_OFFSET_DELTA) + 1
        if set_leader_epoch:
            pylog_put_be32(h + BATCH_LEADER_EPOCH, leader_epoch)
        if log_append_time >= 0:
            attrs = pylog_be16(h + BATCH_ATTRIBUTES)
            pylog_put_be16(h + BATCH_ATTRIBUTES, <int16_t>(attrs | ATTR_LOG_APPEND_TIME))
            pylog_put_be64(h + BATCH_MAX_TIMESTAMP, log_append_time)
            crc = pylog_crc32c(0, h + BATCH_ATTRIBUTES, BATCH_HEADER_SIZE - BATCH_ATTRIBUTES)
            crc = pylog_crc32c(crc, s + pos + BATCH_HEADER_SIZE, <size_t>(bsize - BATCH_HEADER_SIZE))
            pylog_put_be32(h + BATCH_CRC, <int32_t>crc)
        iov[n_iov].iov_base = h
        iov[n_iov].iov_len = BATCH_HEADER_SIZE
        n_iov += 1
        if bsize > BATCH_HEADER_SIZE:
            iov[n_iov].iov_base = <void *>(s + pos + BATCH_HEADER_SIZE)
            iov[n_iov].iov_len = <size_t>(bsize - BATCH_HEADER_SIZE)
            n_iov += 1
        pos += bsize
        k += 1
    if n_iov:
        rc = _pwrite_all(fd, iov, n_iov, file_position + group_start)
        if rc != 0:
            error[0] = rc
            return -2
    return -1


cdef class SegmentAppender:
    """The append state of an active segment, and its append path, in C.

    Holds the writable buffers of the mapped ``.log`` file and both mapped indexes (so
    they cannot be unmapped under it: :meth:`release` first), the valid size, the next
    offset, the largest timestamp and its offset, the segment's first batch timestamp
    (for ``segment_ms``), the index entry counts, and how far blocks are allocated.
    pylog.storage.segment.LogSegment reads and writes these fields while the segment is
    active.  Not thread-safe: the owning Log's lock serializes every call.
    """
    cdef Py_buffer lview, oview, tview
    cdef bint held
    cdef int fd
    cdef uint8_t *headers
    cdef public Py_ssize_t size, populated, bytes_since_index, oi_entries, ti_entries
    cdef readonly Py_ssize_t capacity, oi_max, ti_max, segment_bytes, index_interval
    cdef public int64_t base_offset, next_offset, max_ts, max_ts_offset, rolling_ts, last_time_entry
    cdef public bint can_fallocate
    cdef public object path
    # How far each index mapping's pages are known to have blocks (see _index_room), and
    # how many entries a full disk made the appender leave out.
    cdef public Py_ssize_t oi_ready, ti_ready, index_entries_skipped
    cdef bint can_populate
    # The owning log's settings for its append path (see log_append); set on activation
    # and when the log's config changes.
    cdef public Py_ssize_t max_message_bytes
    cdef public bint stamp_append_time
    cdef public int64_t roll_ms, created_ms
    # Every append by memcpy into the mapping (LogConfig.mmap_append), not only small ones.
    cdef public bint mmap_append

    def __cinit__(self, log_map, int fd, offset_index_map, time_index_map, Py_ssize_t oi_max,
                  Py_ssize_t ti_max, Py_ssize_t segment_bytes, Py_ssize_t index_interval,
                  int64_t base_offset, Py_ssize_t size, int64_t next_offset, int64_t max_ts,
                  int64_t max_ts_offset, int64_t rolling_ts, int64_t last_time_entry,
                  Py_ssize_t oi_entries, Py_ssize_t ti_entries, path=None):
        self.held = False
        self.headers = <uint8_t *>malloc(WRITE_GROUP * HEADER_SLOT)
        if self.headers == NULL:
            raise MemoryError()
        _get_buffer(log_map, &self.lview, True)
        try:
            _get_buffer(offset_index_map, &self.oview, True)
            try:
                _get_buffer(time_index_map, &self.tview, True)
            except BaseException:
                PyBuffer_Release(&self.oview)
                raise
        except BaseException:
            PyBuffer_Release(&self.lview)
            raise
        self.held = True
        if (size < 0 or size > self.lview.len or oi_max > self.oview.len // OFFSET_ENTRY_SIZE
                or ti_max > self.tview.len // TIME_ENTRY_SIZE or oi_entries > oi_max or ti_entries > ti_max):
            self.release()
            raise ValueError("segment appender state does not fit its mappings")
        self.fd = fd
        self.capacity = self.lview.len
        self.oi_max, self.ti_max = oi_max, ti_max
        self.segment_bytes, self.index_interval = segment_bytes, index_interval
        self.base_offset, self.size, self.next_offset = base_offset, size, next_offset
        self.max_ts, self.max_ts_offset = max_ts, max_ts_offset
        self.rolling_ts, self.last_time_entry = rolling_ts, last_time_entry
        self.oi_entries, self.ti_entries = oi_entries, ti_entries
        self.populated = size
        self.bytes_since_index = 0
        self.can_fallocate = True
        self.can_populate = True
        self.oi_ready = 0
        self.ti_ready = 0
        self.index_entries_skipped = 0
        self.path = path
        self.max_message_bytes = DEFAULT_MAX_BATCH_SIZE
        self.stamp_append_time = False
        self.roll_ms = 0x7FFFFFFFFFFFFFFF
        self.created_ms = 0
        self.mmap_append = False

    def release(self):
        """Let go of the three buffers (before the mappings are closed)."""
        if self.held:
            self.held = False
            PyBuffer_Release(&self.lview)
            PyBuffer_Release(&self.oview)
            PyBuffer_Release(&self.tview)

    def __dealloc__(self):
        free(self.headers)
        if self.held:
            PyBuffer_Release(&self.lview)
            PyBuffer_Release(&self.oview)
            PyBuffer_Release(&self.tview)

    cdef int _populate(self, Py_ssize_t end) except -1:
        # Allocate blocks ahead of the writer, 4 MiB at a time, inside the sparse file.
        # Speed: pwritev into allocated blocks measured 5-20% faster than a plain
        # os.write that allocates as it goes.  Safety: a full disk is an error here,
        # before anything is written, never SIGBUS from a small append's memcpy.
        cdef Py_ssize_t n
        cdef int rc
        while self.populated < end:
            n = self.capacity - self.populated
            if n > PREALLOCATE_CHUNK:
                n = PREALLOCATE_CHUNK
            if n <= 0 or not self.can_fallocate:
                self.populated = self.capacity
                break
            with nogil:
                rc = posix_fallocate(self.fd, self.populated, n)
            if rc == 0:
                self.populated += n
            elif (rc == ENOSPC or rc == EDQUOT) and n > end - self.populated:
                # No room for a whole chunk ahead, maybe for this append: allocate only what
                # it needs (whole pages); the next append tries a chunk again.  (Else a
                # nearly full disk refuses appends that fit.)
                n = ((end - self.populated) + 4095) & ~(<Py_ssize_t>4095)
                if n > self.capacity - self.populated:
                    n = self.capacity - self.populated
                with nogil:
                    rc = posix_fallocate(self.fd, self.populated, n)
                if rc == 0:
                    self.populated += n
                elif rc == ENOSPC or rc == EDQUOT:
                    raise KafkaStorageError(
                        f"{self.path}: no space left for the next {n} bytes of the segment; "
                        "free disk space or lower segment_bytes")
                else:
                    self.can_fallocate = False
            elif rc == ENOSPC or rc == EDQUOT:
                raise KafkaStorageError(
                    f"{self.path}: no space left for the next {n} bytes of the segment; "
                    "free disk space or lower segment_bytes")
            else:
                self.can_fallocate = False  # not supported here: every append takes pwritev
        return 0

    cdef bint _index_room(self, Py_buffer *view, Py_ssize_t *ready, Py_ssize_t end) noexcept:
        # The index files are sparse (preallocated by length, as Kafka's): the first write
        # into a page allocates its block, and on a full disk that write would kill the
        # process with SIGBUS.  Allocate pages ahead instead; False when there is no room,
        # and the entry is left out (a sparser index only costs a longer scan).
        cdef int rc
        if end <= ready[0] or not self.can_populate:
            return True
        with nogil:
            rc = pylog_populate_write(<char *>view.buf, view.len, ready[0], end + INDEX_POPULATE_CHUNK)
        if rc == 1:
            self.can_populate = False    # kernel older than 5.14: as before, write and hope
            return True
        if rc == 0:
            ready[0] = end + INDEX_POPULATE_CHUNK
            return True
        with nogil:
            rc = pylog_populate_write(<char *>view.buf, view.len, ready[0], end)
        if rc == 0:
            ready[0] = end
            return True
        self.index_entries_skipped += 1
        return False

    cdef void _scrub(self, Py_ssize_t start, Py_ssize_t end) noexcept:
        # After a failed write: zero what may have landed past the valid size, best effort
        # (through the file, never the mapping: its blocks may not exist), so the tail
        # stays zeros as recovery expects.  The next append overwrites it anyway.
        cdef uint8_t zeros[4096]
        cdef ssize_t n
        memset(zeros, 0, sizeof(zeros))
        while start < end:
            n = pwrite(self.fd, zeros, <size_t>(min(end - start, <Py_ssize_t>sizeof(zeros))),
                       <off_t>start)
            if n <= 0:
                return
            start += n

    cdef Py_ssize_t _commit(self, Py_buffer *views, Py_ssize_t n_views, Py_ssize_t size,
                            int64_t first, int64_t last, int64_t max_ts, int64_t offset_of_max,
                            bint assign, bint set_epoch, int32_t epoch,
                            int64_t append_time) except -1:
        # Write the (validated) batches of views[0:n_views], ``size`` bytes in all.
        cdef Py_ssize_t position = self.size, end = self.size + size, bad = -1
        cdef uint8_t *oi
        cdef uint8_t *ti
        cdef int error = 0
        if not self.held:
            raise KafkaStorageError(f"{self.path}: segment is no longer active")
        if size > self.capacity - position:
            raise RecordBatchTooLargeError(
                f"append of {size} bytes does not fit segment {self.base_offset} "
                f"({position} of {self.capacity} bytes used)")
        if end > self.populated:
            self._populate(end)
        if (size < PWRITE_MIN_BYTES or self.mmap_append) and self.can_fallocate:
            # A small append: a memcpy into the mapping beats a system call, and the page
            # it lands on is usually mapped already.  (Only where blocks were allocated
            # ahead: a memcpy onto a full disk would be SIGBUS, pwritev says ENOSPC.)
            if size >= GIL_RELEASE_BYTES:
                with nogil:
                    bad = _write_views(<uint8_t *>self.lview.buf + position, views, n_views,
                                       first, assign, set_epoch, epoch, append_time)
            else:
                bad = _write_views(<uint8_t *>self.lview.buf + position, views, n_views,
                                   first, assign, set_epoch, epoch, append_time)
        elif size >= GIL_RELEASE_BYTES:
            with nogil:
                bad = _pwrite_batches(self.fd, position, self.headers, views, n_views, first, assign,
                                      set_epoch, epoch, append_time, &error)
        else:
            bad = _pwrite_batches(self.fd, position, self.headers, views, n_views, first, assign,
                                  set_epoch, epoch, append_time, &error)
        if bad == -2:
            self._scrub(position, end)
            raise KafkaStorageError(
                f"{self.path}: writing {size} bytes at byte {position} failed: "
                f"{_segment_os.strerror(error)} (the log is unchanged)")
        if bad >= 0:
            raise CorruptRecordError(f"batch at byte {bad} of the append is not a whole batch")
        if position == 0:
            self.rolling_ts = max_ts
        if max_ts > self.max_ts:
            self.max_ts = max_ts
            self.max_ts_offset = offset_of_max
        if self.bytes_since_index > self.index_interval:
            # Kafka's rule: one entry per index_interval_bytes, at the start of the append,
            # for its last offset.  Entries increase by construction.
            if self.oi_entries < self.oi_max and self._index_room(
                    &self.oview, &self.oi_ready, (self.oi_entries + 1) * OFFSET_ENTRY_SIZE):
                oi = <uint8_t *>self.oview.buf + self.oi_entries * OFFSET_ENTRY_SIZE
                pylog_put_be32(oi, <int32_t>(last - self.base_offset))
                pylog_put_be32(oi + 4, <int32_t>position)
                self.oi_entries += 1
            if self.max_ts > self.last_time_entry and self.ti_entries < self.ti_max - 1 and self._index_room(
                    &self.tview, &self.ti_ready, (self.ti_entries + 1) * TIME_ENTRY_SIZE):
                ti = <uint8_t *>self.tview.buf + self.ti_entries * TIME_ENTRY_SIZE
                pylog_put_be64(ti, self.max_ts)
                pylog_put_be32(ti + 8, <int32_t>(self.max_ts_offset - self.base_offset))
                self.ti_entries += 1
                self.last_time_entry = self.max_ts
            self.bytes_since_index = 0
        self.bytes_since_index += size
        self.size = end
        self.next_offset = last + 1
        return position

    def write(self, src, Py_ssize_t size, int64_t first_offset, int64_t last_offset,
              int64_t max_timestamp, int64_t offset_of_max_timestamp, bint assign_offsets=False,
              leader_epoch=None, int64_t log_append_time=-1):
        """Append batches already validated (by ``validate_batches``), with the offsets
        and timestamps given; no roll checks.  Returns the position."""
        cdef Py_buffer view
        _get_buffer(src, &view, False)
        try:
            if view.len != size:
                raise ValueError(f"size {size} does not match the {view.len} bytes given")
            return self._commit(&view, 1, size, first_offset, last_offset,
                                max_timestamp, offset_of_max_timestamp, assign_offsets,
                                leader_epoch is not None,
                                <int32_t>(leader_epoch if leader_epoch is not None else 0),
                                log_append_time)
        finally:
            PyBuffer_Release(&view)

    def append(self, src, Py_ssize_t max_batch_size, int64_t log_end_offset, bint assign_offsets,
               leader_epoch, bint stamp_append_time, clock, int64_t roll_ms, int64_t created_ms,
               bint force=False):
        """Log.append's whole per-append path: validate ``src`` (a bytes-like object of
        whole batches, or a list or tuple of them taken as their concatenation; CRC32C
        included), work out
        the offsets, decide whether the segment must roll first (Kafka's shouldRoll: size,
        full index, 32-bit relative offsets, ``roll_ms`` since the first batch), allocate,
        copy, rewrite headers, add index entries.

        Returns the LogAppendInfo fields as a tuple, or, when the segment must roll first,
        the base offset the new segment should get (an int; nothing was written: call
        again on the new segment with ``force=True``).  Raises as ``validate_batches``,
        plus InvalidRecordError (replica offsets going backwards), RecordBatchTooLargeError
        (larger than a segment) and KafkaStorageError (disk full).
        """
        return self._append(src, max_batch_size, log_end_offset, assign_offsets, leader_epoch,
                            stamp_append_time, clock, roll_ms, created_ms, force)

    cdef object _append(self, object src, Py_ssize_t max_batch_size, int64_t log_end_offset,
                        bint assign_offsets, object leader_epoch, bint stamp_append_time,
                        object clock, int64_t roll_ms, int64_t created_ms, bint force):
        cdef Py_buffer one
        cdef Py_buffer *views = &one
        cdef Py_ssize_t n = 1, held = 0, i
        cdef BatchSetInfo info
        cdef int64_t first, last, offset_of_max, max_ts, append_time = -1
        cdef bint roll
        cdef Py_ssize_t position
        if not self.held:
            raise KafkaStorageError(f"{self.path}: segment is no longer active")
        if type(src) is list or type(src) is tuple:
            # Several buffers of whole batches, appended as their concatenation (one
            # pwritev; no join).  Each buffer is taken once, so the list may change after.
            n = len(<object>src)
            if n == 0:
                raise CorruptRecordError("empty append: expected at least one record batch")
            if n == 1:
                src = src[0]
            else:
                views = <Py_buffer *>malloc(<size_t>n * sizeof(Py_buffer))
                if views == NULL:
                    raise MemoryError()
        try:
            if n == 1:
                _get_buffer(src, &one, False)
                held = 1
            else:
                for i in range(n):
                    _get_buffer(src[i], &views[i], False)
                    held += 1
            _validate_views_or_raise(views, n, max_batch_size, &info)
            max_ts = info.max_ts
            if assign_offsets:
                first = log_end_offset
                last = log_end_offset + info.span - 1
                offset_of_max = log_end_offset + info.max_ts_rel
                if stamp_append_time:
                    append_time = clock()
                    max_ts = append_time
                    # Every batch now has the largest timestamp; Kafka's LogValidator names
                    # the append's last offset (what its time index entry holds).
                    offset_of_max = last
            else:
                if info.first_base < log_end_offset or not info.monotonic:
                    raise InvalidRecordError(
                        f"replica append offsets must start at or above the log end offset "
                        f"{log_end_offset} and increase (got first offset {info.first_base}"
                        f"{'' if info.monotonic else ', then offsets going backwards'})")
                first = info.first_base
                last = info.last_given
                offset_of_max = info.max_ts_last
            if info.size > self.segment_bytes:
                raise RecordBatchTooLargeError(
                    f"append of {info.size} bytes is larger than segment_bytes={self.segment_bytes}")
            if not force:
                roll = (self.size > self.segment_bytes - info.size
                        or self.oi_entries >= self.oi_max or self.ti_entries >= self.ti_max - 1
                        or last - self.base_offset > MAX_RELATIVE_OFFSET or first < self.base_offset)
                if not roll and self.size > 0:
                    if self.rolling_ts >= 0:
                        roll = max_ts - self.rolling_ts > roll_ms
                    else:
                        roll = <int64_t>clock() - created_ms > roll_ms
                if roll:
                    return first if first > log_end_offset else log_end_offset
            position = self._commit(views, n, info.size, first, last, max_ts, offset_of_max,
                                    assign_offsets, leader_epoch is not None,
                                    <int32_t>(leader_epoch if leader_epoch is not None else 0),
                                    append_time)
        finally:
            for i in range(held):
                PyBuffer_Release(&views[i])
            if views != &one:
                free(views)
        return (first, last, append_time, position, info.size, self.base_offset, info.batches,
                info.records, max_ts, offset_of_max)


cdef inline bint _index_page_ready(Py_buffer *view, Py_ssize_t *ready, Py_ssize_t end) noexcept nogil:
    # Recovery's rebuild: the pages of a sparse index get their blocks as entries reach
    # them (a write into a page a full disk has no block for is SIGBUS); False without room.
    cdef int rc
    if end <= ready[0]:
        return True
    rc = pylog_populate_write(<char *>view.buf, view.len, ready[0], end + INDEX_POPULATE_CHUNK)
    if rc == 0:
        ready[0] = end + INDEX_POPULATE_CHUNK
        return True
    if rc == 1:
        ready[0] = view.len           # kernel older than 5.14: write as before
        return True
    if pylog_populate_write(<char *>view.buf, view.len, ready[0], end) == 0:
        ready[0] = end
        return True
    return False


def populate_write(dst, Py_ssize_t start, Py_ssize_t end):
    """Allocate the blocks behind ``dst[start:end]`` (whole pages), a writable shared
    mapping of a sparse file, so writing there cannot raise SIGBUS on a full disk.

    Returns 0 when done, -1 when the file system has no room, 1 when the kernel cannot
    (older than Linux 5.14: nothing is allocated ahead)."""
    cdef Py_buffer view
    cdef int rc
    _get_buffer(dst, &view, True)
    try:
        with nogil:
            rc = pylog_populate_write(<char *>view.buf, view.len, start, end)
    finally:
        PyBuffer_Release(&view)
    return rc


def zero_range(dst, Py_ssize_t start, Py_ssize_t end):
    """memset ``dst[start:end]`` to zero (the GIL released for large ranges)."""
    cdef Py_buffer view
    _get_buffer(dst, &view, True)
    try:
        if start < 0 or end > view.len or start > end:
            raise ValueError(f"range [{start}, {end}) outside a buffer of {view.len} bytes")
        if end - start >= GIL_RELEASE_BYTES:
            with nogil:
                memset(<uint8_t *>view.buf + start, 0, <size_t>(end - start))
        else:
            memset(<uint8_t *>view.buf + start, 0, <size_t>(end - start))
    finally:
        PyBuffer_Release(&view)


def recover_segment(log_buf, Py_ssize_t end, int64_t base_offset, Py_ssize_t max_batch_size,
                    Py_ssize_t index_interval_bytes, offset_index=None, Py_ssize_t offset_capacity=0,
                    time_index=None, Py_ssize_t time_capacity=0, bint check_crc=True):
    """Scan the batches of a segment from byte 0 to ``end``, stopping at the first one
    that is torn or fails validation (CRC when ``check_crc``; offsets must start at or
    above ``base_offset``, strictly increase, and fit 32 bits relative to it), and rebuild
    the sparse indexes in the same pass when their writable buffers are given (entries
    written as Kafka's recovery writes them: one per ``index_interval_bytes``, plus a
    final time-index entry for the segment's largest timestamp).

    Returns ``(valid_bytes, batches, next_offset, max_timestamp, offset_of_max_timestamp,
    offset_entries, time_entries, first_max_timestamp, tail_is_zero, stop_reason)``:
    ``next_offset`` is the last offset + 1 (``base_offset`` when empty),
    ``tail_is_zero`` says whether the (up to 64 KiB of) bytes after ``valid_bytes`` are
    zero (a preallocated, never-written tail rather than a torn or corrupt one) and
    ``stop_reason`` is None at a clean end or a sentence about the first bad batch.
    """
    cdef Py_buffer lview, oview, tview
    cdef bint have_oi = offset_index is not None, have_ti = time_index is not None
    cdef const uint8_t *p
    cdef uint8_t *oi = NULL
    cdef uint8_t *ti = NULL
    cdef BatchHeader h
    cdef BatchStatus st = BATCH_OK
    cdef Py_ssize_t pos = 0, last_entry_pos = 0, n = 0, oe = 0, te = 0, k
    cdef Py_ssize_t oi_ready = 0, ti_ready = 0
    cdef int64_t last_offset = base_offset - 1, batch_last
    cdef int64_t max_ts = -1, max_ts_offset = -1, first_max_ts = -1, last_te_ts = -1
    cdef int reason = 0   # 0 clean, 1 status, 2 offset below base, 3 not increasing, 4 overflow,
    #                       5 a base offset raised by damage (a gap before the batch, an overlap after)
    cdef bint tail_zero = True
    # The scan's state before the last accepted batch, to take that batch back (reason 5).
    cdef Py_ssize_t s_pos = 0, s_last_entry_pos = 0, s_oe = 0, s_te = 0
    cdef int64_t s_last_offset = base_offset - 1, s_max_ts = -1, s_max_ts_offset = -1
    cdef int64_t s_first_max_ts = -1, s_last_te_ts = -1, gap_base = -1
    cdef bint prev_gap = False
    _get_buffer(log_buf, &lview, False)
    if end < 0 or end > lview.len:
        PyBuffer_Release(&lview)
        raise ValueError(f"segment end {end} outside a mapping of {lview.len} bytes")
    if have_oi:
        _get_buffer(offset_index, &oview, True)
        oi = <uint8_t *>oview.buf
        if offset_capacity > oview.len // OFFSET_ENTRY_SIZE:
            offset_capacity = oview.len // OFFSET_ENTRY_SIZE
    if have_ti:
        _get_buffer(time_index, &tview, True)
        ti = <uint8_t *>tview.buf
        if time_capacity > tview.len // TIME_ENTRY_SIZE:
            time_capacity = tview.len // TIME_ENTRY_SIZE
    p = <const uint8_t *>lview.buf
    try:
        with nogil:
            while pos < end:
                st = parse_batch_header(p + pos, end - pos, max_batch_size, check_crc, &h)
                if st != BATCH_OK:
                    reason = 1
                    break
                if h.base_offset < base_offset:
                    reason = 2
                    break
                if h.base_offset <= last_offset:
                    reason = 3
                    if prev_gap:
                        # The batch before jumped past the offset that should have followed
                        # and this one overlaps it: its base offset (not covered by the CRC)
                        # is the damaged one, so it is not served with wrong offsets.
                        reason = 5
                        pos, last_entry_pos, oe, te = s_pos, s_last_entry_pos, s_oe, s_te
                        last_offset, max_ts, max_ts_offset = s_last_offset, s_max_ts, s_max_ts_offset
                        first_max_ts, last_te_ts = s_first_max_ts, s_last_te_ts
                        n -= 1
                    break
                batch_last = h.base_offset + h.last_offset_delta
                if batch_last - base_offset > MAX_RELATIVE_OFFSET:
                    reason = 4
                    break
                prev_gap = h.base_offset > last_offset + 1
                s_pos, s_last_entry_pos, s_oe, s_te = pos, last_entry_pos, oe, te
                s_last_offset, s_max_ts, s_max_ts_offset = last_offset, max_ts, max_ts_offset
                s_first_max_ts, s_last_te_ts = first_max_ts, last_te_ts
                gap_base = h.base_offset
                if h.max_timestamp > max_ts:
                    max_ts = h.max_timestamp
                    max_ts_offset = batch_last
                if n == 0:
                    first_max_ts = h.max_timestamp
                if pos - last_entry_pos > index_interval_bytes:
                    if have_oi and oe < offset_capacity and not _index_page_ready(
                            &oview, &oi_ready, (oe + 1) * OFFSET_ENTRY_SIZE):
                        offset_capacity = oe
                    if have_oi and oe < offset_capacity:
                        pylog_put_be32(oi + oe * OFFSET_ENTRY_SIZE, <int32_t>(batch_last - base_offset))
                        pylog_put_be32(oi + oe * OFFSET_ENTRY_SIZE + 4, <int32_t>pos)
                        oe += 1
                    if have_ti and te < time_capacity and max_ts > last_te_ts and not _index_page_ready(
                            &tview, &ti_ready, (te + 1) * TIME_ENTRY_SIZE):
                        time_capacity = te
                    if have_ti and te < time_capacity and max_ts > last_te_ts:
                        pylog_put_be64(ti + te * TIME_ENTRY_SIZE, max_ts)
                        pylog_put_be32(ti + te * TIME_ENTRY_SIZE + 8, <int32_t>(max_ts_offset - base_offset))
                        last_te_ts = max_ts
                        te += 1
                    last_entry_pos = pos
                last_offset = batch_last
                pos += h.size
                n += 1
            if have_ti and te < time_capacity and max_ts > last_te_ts and not _index_page_ready(
                    &tview, &ti_ready, (te + 1) * TIME_ENTRY_SIZE):
                time_capacity = te
            if have_ti and te < time_capacity and max_ts > last_te_ts:
                pylog_put_be64(ti + te * TIME_ENTRY_SIZE, max_ts)
                pylog_put_be32(ti + te * TIME_ENTRY_SIZE + 8, <int32_t>(max_ts_offset - base_offset))
                te += 1
            # Diagnostic only (recovery truncates at pos either way): a stop followed by
            # zeros is the never-written preallocated tail.  Bounded to 64 KiB so a sparse
            # 1 GiB tail is not paged in.
            for k in range(pos, end if end - pos <= 65536 else pos + 65536):
                if p[k] != 0:
                    tail_zero = False
                    break
        if reason == 0:
            why = None
        elif reason == 1:
            why = f"{_STATUS_MESSAGES[st]} at byte {pos}"
        elif reason == 2:
            why = f"batch at byte {pos} has base offset {h.base_offset} below the segment's {base_offset}"
        elif reason == 3:
            why = f"batch at byte {pos} has base offset {h.base_offset}, not above the previous last offset {last_offset}"
        elif reason == 5:
            why = (f"batch at byte {pos} has base offset {gap_base}, past the next offset {last_offset + 1}, "
                   f"and the batch after it overlaps it: its base offset is damaged")
        else:
            why = f"batch at byte {pos} has offsets beyond 2**32 of the segment's base offset {base_offset}"
        return (pos, n, last_offset + 1, max_ts, max_ts_offset, oe, te, first_max_ts,
                tail_zero, why)
    finally:
        PyBuffer_Release(&lview)
        if have_oi:
            PyBuffer_Release(&oview)
        if have_ti:
            PyBuffer_Release(&tview)


cdef inline bint _next_header(const uint8_t *p, Py_ssize_t pos, Py_ssize_t end,
                              BatchHeader *h) noexcept nogil:
    # Data below a segment's valid size was validated on append or recovery: headers only.
    return parse_batch_header(p + pos, end - pos, end - pos, False, h) == BATCH_OK


cdef object _read_damage(const uint8_t *p, Py_ssize_t pos, Py_ssize_t end, BatchHeader *h, int why,
                         int64_t prev_last, int64_t lower, int64_t upper, int64_t entry_offset):
    # The CorruptRecordError a read raises at an inconsistent header (never on the fast path).
    cdef BatchStatus st
    if why == 1:
        st = parse_batch_header(p + pos, end - pos, end - pos, False, h)
        if st == BATCH_BAD_LENGTH or st == BATCH_TRUNCATED_BODY:
            what = (f"batch length {h.batch_length} runs past the segment's valid end at byte {end}"
                    if h.batch_length >= BATCH_MIN_LENGTH else f"batch length {h.batch_length} is impossible")
        else:
            what = _STATUS_MESSAGES[st]
    elif why == 2:
        what = f"base offset {h.base_offset} is below the segment's base offset {lower}"
    elif why == 3:
        what = f"base offset {h.base_offset} does not follow the previous batch's last offset {prev_last}"
    elif why == 6:
        parse_batch_header(p + pos, end - pos, end - pos, False, h)
        what = (f"the batch's offsets {h.base_offset}..{h.base_offset + h.last_offset_delta} overlap "
                f"the next batch's and its CRC32C does not match")
    elif why == 4:
        what = (f"last offset {h.base_offset + h.last_offset_delta} (lastOffsetDelta "
                f"{h.last_offset_delta}) is not below {upper}, where the next segment or the log end is")
    else:
        what = (f"the offset index points here for offset {entry_offset}, but the batch starts at "
                f"{h.base_offset}")
    exc = CorruptRecordError(f"inconsistent record batch header at byte {pos}: {what}")
    exc.position = pos
    exc.index_suspect = why == 5
    return exc


cdef bint _batch_crc_ok(const uint8_t *b) noexcept nogil:
    # The CRC32C of a batch whose header was already checked to lie within the data.
    cdef int64_t size = <int64_t>pylog_be32(b + BATCH_LENGTH) + BATCH_LENGTH_OVERHEAD
    return pylog_crc32c(0, b + BATCH_ATTRIBUTES, <size_t>(size - BATCH_ATTRIBUTES)) == \
        <uint32_t>pylog_be32(b + BATCH_CRC)


cdef inline int _check_header(const uint8_t *p, Py_ssize_t pos, Py_ssize_t end, BatchHeader *h,
                              int64_t prev_last, int64_t lower, int64_t upper) noexcept nogil:
    # 0 when the header at pos is consistent with the data below the segment's valid size:
    # it parses and lies wholly inside, its offsets are above the previous batch's and its
    # last offset is inside the segment's bounds [lower, upper).  Else a _read_damage code.
    if parse_batch_header(p + pos, end - pos, end - pos, False, h) != BATCH_OK:
        return 1
    if h.base_offset < lower:
        return 2
    if h.base_offset <= prev_last:
        return 3
    if h.base_offset + h.last_offset_delta >= upper:
        return 4
    return 0


def locate_read(log_buf, Py_ssize_t start, Py_ssize_t end, int64_t target_offset,
                Py_ssize_t max_bytes, int64_t max_offset, int64_t lower_offset=0,
                int64_t upper_offset=0x7FFFFFFFFFFFFFFF, int64_t entry_offset=-1):
    """From the batch boundary ``start`` (an index lookup result), skip batches whose last
    offset is below ``target_offset``, then take whole batches while they fit in
    ``max_bytes`` (always at least one, as Kafka does) and their last offset is below
    ``max_offset``.

    Every header passed on the way is checked against the segment (headers only; the CRC
    is the client's check, as in Kafka): it must parse and end by ``end``, its base offset
    must be at least ``lower_offset`` (the segment's base offset) and above the previous
    batch's last offset, and its last offset below ``upper_offset`` (the next segment's
    base offset, or the log end offset).  When ``entry_offset`` >= 0 (the offset of the
    index entry that gave ``start``), the first batch must start at or below it.

    Returns ``(position, length, first_base_offset, last_offset)``; ``length`` is 0 when
    nothing qualifies (position is then where the target would be, ``end`` at the end).

    Raises
    ------
    CorruptRecordError
        A header is inconsistent; its ``position`` attribute says where, and
        ``index_suspect`` whether only the index entry disagrees with the log.
    """
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef BatchHeader h
    cdef Py_ssize_t pos = start, first, length = 0
    cdef int64_t first_base = -1, last = -1, prev_last = -1, last_before = -1
    cdef Py_ssize_t taken_pos = 0
    cdef int why = 0
    cdef int64_t before_first = -1   # last offset of the batch before ``first`` (-1: not seen)
    cdef bint gap_here = False, taken_gap = False
    _get_buffer(log_buf, &view, False)
    try:
        if start < 0 or end > view.len or start > end:
            raise ValueError(f"read range [{start}, {end}) outside a mapping of {view.len} bytes")
        p = <const uint8_t *>view.buf
        while pos < end:
            why = _check_header(p, pos, end, &h, prev_last, lower_offset, upper_offset)
            if why:
                break
            if pos == start and entry_offset >= 0 and h.base_offset > entry_offset:
                why = 5
                break
            before_first = prev_last
            prev_last = h.base_offset + h.last_offset_delta
            if prev_last >= target_offset:
                break
            pos += h.size
        first = pos
        while why == 0 and pos < end:
            if pos != first:
                why = _check_header(p, pos, end, &h, prev_last, lower_offset, upper_offset)
                if why:
                    if why == 3 and (taken_gap or not _batch_crc_ok(p + taken_pos)):
                        # Offsets that overlap: the batch before is the damaged one (its
                        # lastOffsetDelta is under its CRC; a base offset raised past a
                        # gap is not, but the gap before it and the overlap after it tell
                        # the same).  Never serve it: its offsets would label records
                        # wrongly or send the reader past records it never saw.
                        if taken_pos == first:
                            pos = taken_pos
                            why = 6
                            break
                        length = taken_pos - first
                        last = last_before
                    why = 0       # answer the sound batches before it; the next read meets it
                    break
            if pos == first:
                gap_here = pos != start and before_first >= 0 and h.base_offset > before_first + 1
            else:
                gap_here = h.base_offset > prev_last + 1
            prev_last = h.base_offset + h.last_offset_delta
            if prev_last >= max_offset:
                break
            if length > 0 and length + h.size > max_bytes:
                break
            taken_gap = gap_here
            if length == 0:
                first_base = h.base_offset
            last_before = last
            last = prev_last
            taken_pos = pos
            length += h.size
            pos += h.size
        if why:
            raise _read_damage(p, pos, end, &h, why, prev_last, lower_offset, upper_offset, entry_offset)
        return (first, length, first_base, last)
    finally:
        PyBuffer_Release(&view)


def find_batch(log_buf, Py_ssize_t start, Py_ssize_t end, int64_t target_offset):
    """Position, base offset and last offset of the first batch at or after ``start``
    whose last offset is >= ``target_offset``; ``(end_of_data, -1, -1)`` when none."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef BatchHeader h
    cdef Py_ssize_t pos = start
    _get_buffer(log_buf, &view, False)
    try:
        if start < 0 or end > view.len or start > end:
            raise ValueError(f"range [{start}, {end}) outside a mapping of {view.len} bytes")
        p = <const uint8_t *>view.buf
        while pos < end:
            if not _next_header(p, pos, end, &h):
                break
            if h.base_offset + h.last_offset_delta >= target_offset:
                return (pos, h.base_offset, h.base_offset + h.last_offset_delta)
            pos += h.size
        return (pos, -1, -1)
    finally:
        PyBuffer_Release(&view)


def next_batch(log_buf, Py_ssize_t position, Py_ssize_t end):
    """Header of the batch at ``position`` as ``(base_offset, last_offset, size,
    max_timestamp, attributes, records_count)``, or None at the end of valid data."""
    cdef Py_buffer view
    cdef BatchHeader h
    _get_buffer(log_buf, &view, False)
    try:
        if position < 0 or end > view.len or position > end:
            raise ValueError(f"position {position} outside [0, {end}]")
        if not _next_header(<const uint8_t *>view.buf, position, end, &h):
            return None
        return (h.base_offset, h.base_offset + h.last_offset_delta, h.size, h.max_timestamp,
                h.attributes, h.records_count)
    finally:
        PyBuffer_Release(&view)


cdef inline Py_ssize_t _read_varint(const uint8_t *p, Py_ssize_t pos, Py_ssize_t end,
                                    int64_t *out) noexcept nogil:
    # Zigzag LEB128, at most 10 bytes; every byte is checked to be there before it is read.
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if pos >= end or shift > 63:
            return -1
        b = p[pos]
        pos += 1
        result |= (<uint64_t>(b & 0x7f)) << shift
        if not (b & 0x80):
            break
        shift += 7
    out[0] = <int64_t>(result >> 1) ^ -(<int64_t>(result & 1))
    return pos


cdef int _search_records(const uint8_t *rp, Py_ssize_t rn, const BatchHeader *h, int64_t target_ts,
                         int64_t min_offset, bint equal, int64_t *off_out,
                         int64_t *ts_out) noexcept nogil:
    # Walk a records section (the decompressed one for a compressed batch) for the first
    # record whose timestamp is >= target_ts (== with ``equal``) and whose offset is >=
    # min_offset; 1 found, 0 not found, -1 malformed.  Only the length, timestampDelta and
    # offsetDelta of each record are read; every read is bounded by the record's length.
    cdef Py_ssize_t pos = 0, rec_end
    cdef int64_t length, ts_delta, off_delta, ts, off
    cdef bint log_append = (h.attributes & ATTR_LOG_APPEND_TIME) != 0
    cdef int32_t i
    for i in range(h.records_count):
        pos = _read_varint(rp, pos, rn, &length)
        if pos < 0 or length < RECORD_MIN_BODY or length > rn - pos:
            return -1
        rec_end = pos + length
        pos += 1  # attributes
        pos = _read_varint(rp, pos, rec_end, &ts_delta)
        if pos < 0:
            return -1
        pos = _read_varint(rp, pos, rec_end, &off_delta)
        if pos < 0 or off_delta < 0 or off_delta > h.last_offset_delta:
            return -1
        # A LogAppendTime batch gives every record its maxTimestamp (Kafka's rule).
        ts = h.max_timestamp if log_append else <int64_t>(<uint64_t>h.base_timestamp + <uint64_t>ts_delta)
        off = h.base_offset + off_delta
        if (ts == target_ts if equal else ts >= target_ts) and off >= min_offset:
            off_out[0] = off
            ts_out[0] = ts
            return 1
        pos = rec_end
    return 0


def search_timestamp(log_buf, Py_ssize_t start, Py_ssize_t end, int64_t target_ts, int64_t min_offset,
                     bint max_timestamp=False):
    """Kafka's record-level timestamp searches over the batches at and after the batch
    boundary ``start``.

    By default (FileRecords.searchForTimestamp): the first record, in offset order, with a
    timestamp >= ``target_ts`` and an offset >= ``min_offset``, looking inside each batch
    whose maxTimestamp is >= ``target_ts``.  With ``max_timestamp`` (the MAX_TIMESTAMP
    answer, RecordBatch.offsetOfMaxTimestamp): the first batch whose maxTimestamp equals
    ``target_ts``, and in it the first record with exactly that timestamp at or above
    ``min_offset``; no later batch is looked at.  A LogAppendTime batch gives every record
    its maxTimestamp.  Compressed batches are decompressed (once each, bounded by
    :data:`pylog.codecs.DEFAULT_MAX_UNCOMPRESSED`) and walked in C, like uncompressed ones.

    Returns ``(offset, timestamp, partition_leader_epoch)`` of that record (the epoch of
    its batch), or None.

    Raises
    ------
    CorruptRecordError
        A batch searched has records that do not parse or does not decompress.
    """
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef const uint8_t *rp
    cdef Py_ssize_t rn
    cdef BatchHeader h
    cdef Py_ssize_t pos = start
    cdef int64_t off, ts
    cdef int rc, codec
    _get_buffer(log_buf, &view, False)
    try:
        if start < 0 or end > view.len or start > end:
            raise ValueError(f"range [{start}, {end}) outside a mapping of {view.len} bytes")
        p = <const uint8_t *>view.buf
        while pos < end:
            if not _next_header(p, pos, end, &h):
                break
            if (h.max_timestamp == target_ts if max_timestamp else h.max_timestamp >= target_ts) and (
                    h.base_offset + h.last_offset_delta >= min_offset):
                codec = h.attributes & ATTR_CODEC_MASK
                section = None
                if codec == 0:
                    rp, rn = p + pos + BATCH_HEADER_SIZE, h.size - BATCH_HEADER_SIZE
                elif codec > 4:
                    raise CorruptRecordError(f"batch at byte {pos} (base offset {h.base_offset}) "
                                             f"names unknown compression codec {codec}")
                else:
                    section = _codecs.decompress(codec, PyMemoryView_FromMemory(
                        <char *>p + pos + BATCH_HEADER_SIZE, h.size - BATCH_HEADER_SIZE, PyBUF_READ),
                        _codecs.DEFAULT_MAX_UNCOMPRESSED)
                    if not PyBytes_CheckExact(section):
                        section = bytes(section)
                    rp, rn = <const uint8_t *>PyBytes_AS_STRING(section), PyBytes_GET_SIZE(section)
                rc = _search_records(rp, rn, &h, target_ts, min_offset, max_timestamp, &off, &ts)
                if rc == 1:
                    return (off, ts, h.leader_epoch)
                if rc < 0:
                    raise CorruptRecordError(f"batch at byte {pos} (base offset {h.base_offset}): "
                                             f"its records do not parse")
                if max_timestamp:
                    return None
            pos += h.size
        return None
    finally:
        PyBuffer_Release(&view)


def leader_epoch_starts(log_buf, Py_ssize_t start, Py_ssize_t end, int32_t latest_epoch):
    """``[(epoch, base_offset), ...]`` for each batch in ``log_buf[start:end]`` (whole
    batches, headers only) whose partitionLeaderEpoch is above every epoch before it,
    starting from ``latest_epoch``: what a leader epoch cache learns from stored batches
    (recovery, replica appends).  Stops quietly at the first header that does not parse."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef BatchHeader h
    cdef Py_ssize_t pos = start
    out = []
    _get_buffer(log_buf, &view, False)
    try:
        if start < 0 or end > view.len or start > end:
            raise ValueError(f"range [{start}, {end}) outside a buffer of {view.len} bytes")
        p = <const uint8_t *>view.buf
        while pos < end:
            if not _next_header(p, pos, end, &h):
                break
            if h.leader_epoch > latest_epoch:
                latest_epoch = h.leader_epoch
                out.append((h.leader_epoch, h.base_offset))
            pos += h.size
        return out
    finally:
        PyBuffer_Release(&view)
