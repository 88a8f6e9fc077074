# Part of pylog._core (included by _core.pyx).
# Records of a v2 batch: encode (RecordBatchBuilder, per record and bulk), decode
# (RecordBatch: iteration, columnar view, full validation), iter_batches over a run of
# batches, and filter_batch for the log cleaner.
#
# Every decoder is bounded: it reads through a pointer and the end of its buffer (a
# record's own end once its length is known), checks before each read, varints included,
# and reports bad input as CorruptRecordError.  The layout is in ARCHITECTURE.md.
cimport cython
from cpython.buffer cimport PyBUF_READ, PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_CheckExact
from cpython.number cimport PyNumber_Index
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT32_MAX, INT64_MAX, INT64_MIN, uint64_t
from libc.string cimport memcpy, memset

import pylog.codecs as _codecs
from pylog.errors import RecordBatchTooLargeError, UnsupportedCompressionTypeError

# numpy's C API, loaded on the first use of a numpy column rather than when _core is
# imported: importing numpy is about a third of `pylog serve`'s start-up (#17), and a
# broker needs it for none of its produce, fetch or storage paths.  ``cimport numpy``
# would import it at module init (its extension types are looked up there), so the few
# calls the columns need are declared here instead, on numpy's own header.
cdef extern from *:
    """
    #include "numpy/arrayobject.h"
    static int pylog_numpy_loaded = 0;
    static int pylog_load_numpy(void) {
        if (!pylog_numpy_loaded) {
            if (_import_array() < 0) return -1;
            pylog_numpy_loaded = 1;
        }
        return 0;
    }
    static PyObject *pylog_empty_column(Py_ssize_t n, int typenum) {
        npy_intp dims[1];
        dims[0] = (npy_intp)n;
        return PyArray_EMPTY(1, dims, typenum, 0);
    }
    static void *pylog_array_data(PyObject *a) { return PyArray_DATA((PyArrayObject *)a); }
    static void pylog_array_freeze(PyObject *a) { PyArray_CLEARFLAGS((PyArrayObject *)a, NPY_ARRAY_WRITEABLE); }
    static int pylog_is_ndarray(PyObject *o) { return pylog_numpy_loaded && PyArray_Check(o); }
    static int pylog_array_type(PyObject *a) { return PyArray_TYPE((PyArrayObject *)a); }
    static int pylog_array_c_contiguous(PyObject *a) { return PyArray_IS_C_CONTIGUOUS((PyArrayObject *)a); }
    """
    enum:
        NPY_INT32
        NPY_INT64
        NPY_OBJECT
    int pylog_load_numpy() except -1
    object pylog_empty_column(Py_ssize_t n, int typenum)
    void *pylog_array_data(object a)
    void pylog_array_freeze(object a)
    bint pylog_is_ndarray(object o)
    int pylog_array_type(object a)
    bint pylog_array_c_contiguous(object a)

import sys as _records_sys

cdef object _numpy_module = None
cdef dict _sys_modules = _records_sys.modules


cdef object _np():
    """The numpy module, imported (and its C API loaded) on first use."""
    global _numpy_module
    if _numpy_module is None:
        import numpy
        pylog_load_numpy()
        _numpy_module = numpy
    return _numpy_module


cdef inline bint _is_ndarray(object o) except -1:
    """Whether ``o`` is a numpy array (without importing numpy: if nobody has, it is not)."""
    if _numpy_module is None:
        if "numpy" not in _sys_modules:
            return False
        _np()
    return pylog_is_ndarray(o)

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    PyObject **PySequence_Fast_ITEMS(object o)

cdef extern from *:
    """
    #if defined(_WIN32)
    #include <windows.h>
    static int64_t pylog_now_ms(void) {
        FILETIME ft; ULARGE_INTEGER u;
        GetSystemTimeAsFileTime(&ft);
        u.LowPart = ft.dwLowDateTime; u.HighPart = ft.dwHighDateTime;
        return (int64_t)((u.QuadPart - 116444736000000000ULL) / 10000);
    }
    #else
    #include <time.h>
    static int64_t pylog_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    #endif
    """
    int64_t pylog_now_ms() nogil


# ---------------------------------------------------------------------------------------
# Varints: zigzag LEB128.  Kafka's varint holds an int32 (at most 5 bytes), its varlong
# an int64 (at most 10 bytes).

cdef inline int varint_size(int64_t v) noexcept nogil:
    cdef uint64_t u = (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)
    cdef int n = 1
    while u >= 0x80:
        u >>= 7
        n += 1
    return n


cdef inline uint8_t *put_varint(uint8_t *p, int64_t v) noexcept nogil:
    # Zigzag of an int32 as 64 bits is the same number as its 32-bit zigzag, so one
    # writer serves varint and varlong.
    cdef uint64_t u = (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)
    while u >= 0x80:
        p[0] = <uint8_t>(u | 0x80)
        p += 1
        u >>= 7
    p[0] = <uint8_t>u
    return p + 1


cdef inline const uint8_t *get_varint(const uint8_t *p, const uint8_t *end, int32_t *out) noexcept nogil:
    """Read a varint from [p, end); NULL when it runs past end, is longer than 5 bytes,
    or does not fit 32 bits."""
    cdef uint32_t u = 0
    cdef uint32_t b
    cdef int shift = 0
    if p < end and p[0] < 0x80:  # most varints of a record are one byte
        b = p[0]
        out[0] = <int32_t>((b >> 1) ^ (0u - (b & 1)))
        return p + 1
    while shift < 35:
        if p >= end:
            return NULL
        b = p[0]
        p += 1
        u |= (b & 0x7f) << shift
        if b < 0x80:
            if shift == 28 and b > 0x0f:
                return NULL
            out[0] = <int32_t>((u >> 1) ^ (0u - (u & 1)))
            return p
        shift += 7
    return NULL


cdef inline const uint8_t *get_varlong(const uint8_t *p, const uint8_t *end, int64_t *out) noexcept nogil:
    """Read a varlong from [p, end); NULL when it runs past end or is longer than 10 bytes."""
    cdef uint64_t u = 0
    cdef uint64_t b
    cdef int shift = 0
    if p < end and p[0] < 0x80:
        b = p[0]
        out[0] = <int64_t>((b >> 1) ^ (<uint64_t>0 - (b & 1)))
        return p + 1
    while shift < 70:
        if p >= end:
            return NULL
        b = p[0]
        p += 1
        u |= (b & 0x7f) << shift
        if b < 0x80:
            if shift == 63 and b > 1:
                return NULL
            out[0] = <int64_t>((u >> 1) ^ (<uint64_t>0 - (u & 1)))
            return p
        shift += 7
    return NULL


# ---------------------------------------------------------------------------------------
# Record decoding

cdef enum RecordStatus:
    RECORD_OK = 0
    RECORD_TRUNCATED = 1        # the buffer ends inside the record
    RECORD_BAD_VARINT = 2       # a varint runs past the record, is too long or too large
    RECORD_BAD_LENGTH = 3       # record length smaller than the six one-byte fields
    RECORD_BAD_KEY = 4          # key length below -1 or past the record end
    RECORD_BAD_VALUE = 5
    RECORD_BAD_HEADERS = 6      # negative count, null/negative header key, bad value length
    RECORD_LENGTH_MISMATCH = 7  # the fields end before the declared record length
    RECORD_BAD_OFFSET = 8       # offset delta not increasing, or past lastOffsetDelta
    RECORD_TRAILING = 9         # bytes left after recordsCount records
    RECORD_BAD_COUNT = 10       # recordsCount larger than the bytes could hold

_RECORD_MESSAGES = {
    RECORD_TRUNCATED: "record runs past the end of the records section",
    RECORD_BAD_VARINT: "malformed varint (truncated, longer than 5/10 bytes, or out of range)",
    RECORD_BAD_LENGTH: "record length is smaller than a record can be",
    RECORD_BAD_KEY: "record key length is below -1 or runs past the record",
    RECORD_BAD_VALUE: "record value length is below -1 or runs past the record",
    RECORD_BAD_HEADERS: "record headers are malformed (negative count, null key, or lengths past the record)",
    RECORD_LENGTH_MISMATCH: "record fields end before its declared length",
    RECORD_BAD_OFFSET: "record offset delta is not increasing or exceeds the batch's lastOffsetDelta",
    RECORD_TRAILING: "bytes remain after recordsCount records",
    RECORD_BAD_COUNT: "recordsCount is larger than the records section can hold",
}

# The smallest record: length, attributes, timestampDelta, offsetDelta, key length, value
# length and header count, one byte each.
cdef enum:
    RECORD_MIN_BODY = 6
    RECORD_MIN_SIZE = 7
    # Upper bound of everything but key, value and headers: length 5, attributes 1,
    # timestampDelta 10, offsetDelta 5, key length 5, value length 5, header count 5.
    RECORD_MAX_OVERHEAD = 36


cdef struct RecordFields:
    int64_t timestamp_delta
    int32_t offset_delta
    int32_t key_length
    int32_t value_length
    int32_t header_count
    const uint8_t *start
    const uint8_t *key
    const uint8_t *value
    const uint8_t *headers
    const uint8_t *end


cdef RecordStatus read_record(const uint8_t *p, const uint8_t *end, RecordFields *f) noexcept nogil:
    """Parse and check the record at p; every read is bounded by the record's end."""
    cdef int32_t length, n, hk, hv
    cdef const uint8_t *rend
    f.start = p
    p = get_varint(p, end, &length)
    if p == NULL:
        return RECORD_TRUNCATED if end - f.start < 5 else RECORD_BAD_VARINT
    if length < RECORD_MIN_BODY:
        return RECORD_BAD_LENGTH
    if length > end - p:
        return RECORD_TRUNCATED
    rend = p + length
    f.end = rend
    p += 1  # record attributes: unused since v2, read and ignored
    p = get_varlong(p, rend, &f.timestamp_delta)
    if p == NULL:
        return RECORD_BAD_VARINT
    p = get_varint(p, rend, &f.offset_delta)
    if p == NULL:
        return RECORD_BAD_VARINT
    p = get_varint(p, rend, &f.key_length)
    if p == NULL:
        return RECORD_BAD_VARINT
    f.key = p
    if f.key_length >= 0:
        if f.key_length > rend - p:
            return RECORD_BAD_KEY
        p += f.key_length
    elif f.key_length != -1:
        return RECORD_BAD_KEY
    p = get_varint(p, rend, &f.value_length)
    if p == NULL:
        return RECORD_BAD_VARINT
    f.value = p
    if f.value_length >= 0:
        if f.value_length > rend - p:
            return RECORD_BAD_VALUE
        p += f.value_length
    elif f.value_length != -1:
        return RECORD_BAD_VALUE
    p = get_varint(p, rend, &f.header_count)
    if p == NULL:
        return RECORD_BAD_VARINT
    # Each header takes at least two bytes (two length varints).
    if f.header_count < 0 or f.header_count > (rend - p) // 2:
        return RECORD_BAD_HEADERS
    f.headers = p
    n = f.header_count
    while n > 0:
        p = get_varint(p, rend, &hk)
        if p == NULL:
            return RECORD_BAD_VARINT
        if hk < 0 or hk > rend - p:
            return RECORD_BAD_HEADERS
        p += hk
        p = get_varint(p, rend, &hv)
        if p == NULL:
            return RECORD_BAD_VARINT
        if hv >= 0:
            if hv > rend - p:
                return RECORD_BAD_HEADERS
            p += hv
        elif hv != -1:
            return RECORD_BAD_HEADERS
        n -= 1
    if p != rend:
        return RECORD_LENGTH_MISMATCH
    return RECORD_OK


cdef tuple EMPTY_HEADERS = ()


cdef tuple decode_headers(const uint8_t *p, const uint8_t *end, int32_t count):
    """Headers of a record already checked by read_record, as ((key, value), ...).

    Header keys are decoded as UTF-8 with replacement of malformed bytes, as Kafka's Java
    client does; a null header value is None.  Reads stay bounded anyway."""
    cdef int32_t i, hk, hv
    cdef tuple out
    cdef object key, value
    if count == 0:
        return EMPTY_HEADERS
    out = PyTuple_New(count)
    for i in range(count):
        p = get_varint(p, end, &hk)
        if p == NULL or hk < 0 or hk > end - p:
            raise CorruptRecordError("malformed record header key")
        key = PyUnicode_DecodeUTF8(<const char *>p, hk, "replace")
        p += hk
        p = get_varint(p, end, &hv)
        if p == NULL or hv < -1 or hv > end - p:
            raise CorruptRecordError("malformed record header value")
        if hv < 0:
            value = None
        else:
            value = PyBytes_FromStringAndSize(<const char *>p, hv)
            p += hv
        pair = (key, value)
        Py_INCREF(pair)
        PyTuple_SET_ITEM(out, i, pair)
    return out


cdef struct ColumnsOut:
    int64_t *offsets
    int64_t *timestamps
    int64_t *key_offsets
    int32_t *key_lengths
    int64_t *value_offsets
    int32_t *value_lengths
    int64_t *header_offsets
    int32_t *header_counts
    int64_t *starts
    int64_t *ends


cdef RecordStatus decode_records(const uint8_t *base, Py_ssize_t n, const BatchHeader *h,
                                 ColumnsOut *out, int32_t *failed) noexcept nogil:
    """Check every record of a records section and fill the columns that are not NULL.

    Positions are relative to base.  For LogAppendTime batches every record's timestamp
    is the batch's maxTimestamp, as Kafka defines it."""
    cdef const uint8_t *p = base
    cdef const uint8_t *end = base + n
    cdef RecordFields f
    cdef RecordStatus st
    cdef int32_t i, prev = -1
    cdef int32_t count = h.records_count
    cdef bint log_append = (h.attributes & ATTR_LOG_APPEND_TIME) != 0
    failed[0] = 0
    if count > n // RECORD_MIN_SIZE:
        return RECORD_BAD_COUNT
    for i in range(count):
        st = read_record(p, end, &f)
        if st != RECORD_OK:
            failed[0] = i
            return st
        if f.offset_delta <= prev or f.offset_delta > h.last_offset_delta:
            failed[0] = i
            return RECORD_BAD_OFFSET
        prev = f.offset_delta
        if out.offsets != NULL:
            out.offsets[i] = h.base_offset + f.offset_delta
        if out.timestamps != NULL:
            out.timestamps[i] = h.max_timestamp if log_append else <int64_t>(
                <uint64_t>h.base_timestamp + <uint64_t>f.timestamp_delta)
        if out.key_offsets != NULL:
            out.key_offsets[i] = f.key - base
            out.key_lengths[i] = f.key_length
        if out.value_offsets != NULL:
            out.value_offsets[i] = f.value - base
            out.value_lengths[i] = f.value_length
        if out.header_offsets != NULL:
            out.header_offsets[i] = f.headers - base
            out.header_counts[i] = f.header_count
        if out.starts != NULL:
            out.starts[i] = f.start - base
            out.ends[i] = f.end - base
        p = f.end
    if p != end:
        failed[0] = count
        return RECORD_TRAILING
    return RECORD_OK


cdef RecordStatus scan_null_keys(const uint8_t *base, Py_ssize_t n, const BatchHeader *h,
                                 int32_t *indexes, int32_t *n_null, int32_t *failed) noexcept nogil:
    """Check every record of a records section as decode_records does, counting the
    records whose key is null (n_null) and, when ``indexes`` is not NULL, writing their
    positions in the batch there (room for n_null entries, known from a first pass)."""
    cdef const uint8_t *p = base
    cdef const uint8_t *end = base + n
    cdef RecordFields f
    cdef RecordStatus st
    cdef int32_t i, prev = -1, found = 0
    cdef int32_t count = h.records_count
    failed[0] = 0
    n_null[0] = 0
    if count > n // RECORD_MIN_SIZE:
        return RECORD_BAD_COUNT
    for i in range(count):
        st = read_record(p, end, &f)
        if st != RECORD_OK:
            failed[0] = i
            return st
        if f.offset_delta <= prev or f.offset_delta > h.last_offset_delta:
            failed[0] = i
            return RECORD_BAD_OFFSET
        prev = f.offset_delta
        if f.key_length < 0:
            if indexes != NULL:
                indexes[found] = i
            found += 1
        p = f.end
    if p != end:
        failed[0] = count
        return RECORD_TRAILING
    n_null[0] = found
    return RECORD_OK


cdef object record_error(RecordStatus st, int32_t index, const BatchHeader *h):
    return CorruptRecordError(
        f"{_RECORD_MESSAGES[st]} (record {index} of {h.records_count} in the batch at "
        f"base offset {h.base_offset})")


# ---------------------------------------------------------------------------------------
# Buffers

@cython.final
@cython.no_gc_clear
cdef class _BufferRef:
    """One exported buffer of an object, released when the last view of it goes."""
    cdef Py_buffer view
    cdef bint held

    def __dealloc__(self):
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)


cdef _BufferRef acquire_buffer(object obj):
    cdef _BufferRef ref = _BufferRef.__new__(_BufferRef)
    PyObject_GetBuffer(obj, &ref.view, PyBUF_SIMPLE)
    ref.held = True
    return ref


# ---------------------------------------------------------------------------------------
# Record

@cython.final
@cython.freelist(256)
@cython.no_gc
cdef class Record:
    """One record of a batch, as iteration yields it.

    Attributes
    ----------
    offset : int
        Absolute offset (base offset + offset delta).
    timestamp : int
        Milliseconds since the epoch (for a LogAppendTime batch, the batch's maxTimestamp).
    key, value : bytes or None
    headers : tuple of (str, bytes or None)
    """
    # Exposed as read-only member descriptors (what __slots__ gives a Python class), see
    # expose_record_fields below.
    cdef object offset
    cdef object timestamp
    cdef object key
    cdef object value
    cdef tuple headers

    def __init__(self, offset, timestamp, key, value, headers=()):
        self.offset = int(offset)
        self.timestamp = int(timestamp)
        self.key = key
        self.value = value
        self.headers = tuple(headers)

    def __repr__(self):
        return (f"Record(offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
                f"value={self.value!r}, headers={self.headers!r})")

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        cdef Record o = <Record>other
        return (self.offset == o.offset and self.timestamp == o.timestamp and self.key == o.key
                and self.value == o.value and self.headers == o.headers)

    def __hash__(self):
        return hash((self.offset, self.timestamp, self.key, self.value, self.headers))

    def __reduce__(self):
        return (Record, (self.offset, self.timestamp, self.key, self.value, self.headers))


cdef extern from *:
    """
    #include <structmember.h>
    /* Record's fields as T_OBJECT_EX member descriptors rather than Cython's getset
     * properties: CPython (3.11+) specialises attribute loads of such members (as for
     * __slots__) into one indexed load, several times faster than a getter call, and a
     * consumer loop reads four or five fields of every record. */
    static PyMemberDef pylog_record_members[5];
    static int pylog_expose_members(PyTypeObject *t, const char **names, const char **docs,
                                    const Py_ssize_t *offsets, int n) {
        int i;
        for (i = 0; i < n; i++) {
            PyObject *d;
            pylog_record_members[i].name = names[i];
            pylog_record_members[i].type = T_OBJECT_EX;
            pylog_record_members[i].offset = offsets[i];
            pylog_record_members[i].flags = READONLY;
            pylog_record_members[i].doc = docs[i];
            d = PyDescr_NewMember(t, &pylog_record_members[i]);
            if (d == NULL) return -1;
            if (PyDict_SetItemString(t->tp_dict, names[i], d) < 0) { Py_DECREF(d); return -1; }
            Py_DECREF(d);
        }
        PyType_Modified(t);
        return 0;
    }
    """
    int pylog_expose_members(type t, const char **names, const char **docs,
                             const Py_ssize_t *offsets, int n) except -1

cdef extern from *:
    """
    /* Where in obj's struct the field holding value is (-1: nowhere). */
    static Py_ssize_t pylog_find_field(PyObject *obj, PyObject *value) {
        Py_ssize_t off;
        for (off = sizeof(PyObject); off + (Py_ssize_t)sizeof(PyObject *) <= Py_TYPE(obj)->tp_basicsize;
             off += sizeof(PyObject *))
            if (*(PyObject **)((char *)obj + off) == value) return off;
        return -1;
    }
    """
    Py_ssize_t pylog_find_field(object obj, object value)


cdef int expose_record_fields() except -1:
    cdef Record r = Record.__new__(Record)
    cdef const char *names[5]
    cdef const char *docs[5]
    cdef Py_ssize_t offsets[5]
    names[0] = b"offset"
    names[1] = b"timestamp"
    names[2] = b"key"
    names[3] = b"value"
    names[4] = b"headers"
    docs[0] = b"Absolute offset of the record (int)."
    docs[1] = b"Timestamp in ms since the epoch (int); for a LogAppendTime batch its maxTimestamp."
    docs[2] = b"Key (bytes or None)."
    docs[3] = b"Value (bytes or None)."
    docs[4] = b"Headers: tuple of (str, bytes or None) pairs."
    # Cython does not give a field's offset; find each by the marker object put in it.
    markers = (object(), object(), object(), object(), ())
    r.offset, r.timestamp, r.key, r.value, r.headers = markers[0], markers[1], markers[2], markers[3], (0,)
    for i in range(4):
        offsets[i] = pylog_find_field(r, markers[i])
    offsets[4] = pylog_find_field(r, r.headers)
    for i in range(5):
        if offsets[i] < 0:
            raise ImportError("pylog._core: cannot lay out Record's fields")
    return pylog_expose_members(Record, names, docs, offsets, 5)


expose_record_fields()


# ---------------------------------------------------------------------------------------
# RecordBatch: a view of one batch

_CODEC_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")


cdef inline object bytes_or_none(const uint8_t *p, int32_t n):
    if n < 0:
        return None
    return PyBytes_FromStringAndSize(<const char *>p, n)


@cython.final
cdef class RecordBatch:
    """A zero-copy view of one v2 record batch in a bytes-like object (bytes, bytearray,
    memoryview, an mmap or a slice of one).

    Construction checks the header (size, magic 2, counts, base offset) but not the CRC
    or the records; :meth:`validate` checks everything.  Iteration and :meth:`columns`
    decode the records, bounded, raising :class:`~pylog.errors.CorruptRecordError` on bad
    input.  ``memoryview(batch)`` / ``bytes(batch)`` give the batch's bytes (exactly
    ``size`` of them; trailing bytes of the buffer are not part of the batch).

    The view holds a buffer export of the object it reads: a bytearray cannot be resized
    and an mmap cannot be closed while a view (or a record column view) is alive.

    Parameters
    ----------
    buffer
        A bytes-like object that starts with a batch.
    max_uncompressed : int, optional
        Largest size the records section may decompress to (default
        :func:`pylog.codecs.default_max_uncompressed` of the compressed size).

    Raises
    ------
    CorruptRecordError
        The header is truncated or invalid, or the batch runs past the buffer.
    """
    cdef _BufferRef _ref
    cdef const uint8_t *_p
    cdef BatchHeader _h
    cdef object _records           # decompressed records section, or None
    cdef const uint8_t *_rp        # records section (decompressed when compressed)
    cdef Py_ssize_t _rn
    cdef object _max_uncompressed

    def __init__(self, buffer, *, max_uncompressed=None):
        cdef _BufferRef ref = acquire_buffer(buffer)
        init_batch(self, ref, 0, ref.view.len, max_uncompressed)

    # -- buffer protocol: the batch's own bytes, read-only
    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, <void *>self._p, self._h.size, 1, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass

    # -- header fields
    @property
    def base_offset(self):
        return self._h.base_offset

    @property
    def batch_length(self):
        """The stored batchLength: bytes after the length field (``size - 12``)."""
        return self._h.batch_length

    @property
    def size(self):
        """Bytes in the whole batch, header included."""
        return self._h.size

    @property
    def partition_leader_epoch(self):
        return self._h.leader_epoch

    @property
    def magic(self):
        return self._h.magic

    @property
    def crc(self):
        return self._h.crc

    @property
    def attributes(self):
        return self._h.attributes

    @property
    def codec(self):
        """Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)."""
        return self._h.attributes & ATTR_CODEC_MASK

    @property
    def compression(self):
        """Compression codec name: ``"none"``, ``"gzip"``, ``"snappy"``, ``"lz4"``, ``"zstd"``."""
        cdef int c = self._h.attributes & ATTR_CODEC_MASK
        return _CODEC_NAMES[c] if c < 5 else f"unknown({c})"

    @property
    def timestamp_type(self):
        """``"create"`` (CreateTime) or ``"log_append"`` (LogAppendTime)."""
        return "log_append" if self._h.attributes & ATTR_LOG_APPEND_TIME else "create"

    @property
    def is_transactional(self):
        return (self._h.attributes & ATTR_TRANSACTIONAL) != 0

    @property
    def is_control(self):
        return (self._h.attributes & ATTR_CONTROL) != 0

    @property
    def has_delete_horizon(self):
        return (self._h.attributes & ATTR_DELETE_HORIZON) != 0

    @property
    def last_offset_delta(self):
        return self._h.last_offset_delta

    @property
    def last_offset(self):
        return self._h.base_offset + self._h.last_offset_delta

    @property
    def next_offset(self):
        return self._h.base_offset + self._h.last_offset_delta + 1

    @property
    def base_timestamp(self):
        return self._h.base_timestamp

    @property
    def max_timestamp(self):
        return self._h.max_timestamp

    @property
    def producer_id(self):
        return self._h.producer_id

    @property
    def producer_epoch(self):
        return self._h.producer_epoch

    @property
    def base_sequence(self):
        return self._h.base_sequence

    @property
    def last_sequence(self):
        """Sequence number of the last record (-1 without a producer sequence); wraps at
        2**31 as Kafka's does."""
        if self._h.base_sequence < 0:
            return -1
        return (<int64_t>self._h.base_sequence + self._h.last_offset_delta) % 2147483648

    @property
    def records_count(self):
        return self._h.records_count

    def __repr__(self):
        return (f"<RecordBatch base_offset={self._h.base_offset} records={self._h.records_count} "
                f"size={self._h.size} compression={self.compression}>")

    # -- checks
    def validate(self):
        """Check the whole batch: header (size, magic, counts), CRC32C, then every record
        (lengths, varints, count, offset deltas increasing and within lastOffsetDelta,
        no trailing bytes), decompressing if needed.

        Raises
        ------
        CorruptRecordError
            With the failed check in the message.
        """
        cdef BatchStatus st
        cdef BatchHeader h
        cdef RecordStatus rst
        cdef int32_t failed
        cdef ColumnsOut out
        self._check()
        if self._h.size >= GIL_RELEASE_BYTES:
            with nogil:
                st = parse_batch_header(self._p, self._h.size, self._h.size, True, &h)
        else:
            st = parse_batch_header(self._p, self._h.size, self._h.size, True, &h)
        if st != BATCH_OK:
            raise CorruptRecordError(f"{_STATUS_MESSAGES[st]} (batch at base offset {h.base_offset})")
        self._ensure_records()
        memset(&out, 0, sizeof(out))
        rst = decode_records(self._rp, self._rn, &self._h, &out, &failed)
        if rst != RECORD_OK:
            raise record_error(rst, failed, &self._h)

    def is_valid(self):
        """True when :meth:`validate` would pass."""
        try:
            self.validate()
        except CorruptRecordError:
            return False
        return True

    def crc_matches(self):
        """True when the stored CRC32C matches the bytes (the cheap part of validate)."""
        cdef uint32_t crc
        self._check()
        with nogil:
            crc = pylog_crc32c(0, self._p + BATCH_ATTRIBUTES, <size_t>(self._h.size - BATCH_ATTRIBUTES))
        return crc == self._h.crc

    def null_key_indexes(self):
        """Positions in the batch (0-based) of the records whose key is null, as a list
        (empty when every record has a key): what a compacted topic refuses, as Kafka's
        INVALID_RECORD with one record error each.  The records are checked and scanned
        in C, bounded as :meth:`validate` (a compressed batch is decompressed first);
        no per-record Python object is made.

        Raises
        ------
        CorruptRecordError
            A record is malformed.
        """
        cdef RecordStatus st
        cdef int32_t failed = 0, n_null = 0, again = 0, i
        cdef int32_t *indexes
        cdef list out
        self._ensure_records()
        if self._rn >= GIL_RELEASE_BYTES:
            with nogil:
                st = scan_null_keys(self._rp, self._rn, &self._h, NULL, &n_null, &failed)
        else:
            st = scan_null_keys(self._rp, self._rn, &self._h, NULL, &n_null, &failed)
        if st != RECORD_OK:
            raise record_error(st, failed, &self._h)
        if n_null == 0:
            return []
        indexes = <int32_t *>PyMem_Malloc(<size_t>n_null * sizeof(int32_t))
        if indexes == NULL:
            raise MemoryError()
        try:
            st = scan_null_keys(self._rp, self._rn, &self._h, indexes, &again, &failed)
            if st != RECORD_OK or again != n_null:   # the bytes are immutable: cannot happen
                raise CorruptRecordError("record batch changed while it was scanned")
            out = [indexes[i] for i in range(n_null)]
        finally:
            PyMem_Free(indexes)
        return out

    # -- records
    cdef int _check(self) except -1:
        if self._p == NULL:
            raise ValueError("RecordBatch was not initialised: construct it as RecordBatch(buffer)")
        return 0

    cdef int _ensure_records(self) except -1:
        cdef int c
        if self._rp != NULL:
            return 0
        self._check()
        c = self._h.attributes & ATTR_CODEC_MASK
        if c == 0:
            self._rp = self._p + BATCH_HEADER_SIZE
            self._rn = self._h.size - BATCH_HEADER_SIZE
            return 0
        if c > 4:
            raise CorruptRecordError(
                f"record batch at base offset {self._h.base_offset} names unknown compression codec {c}")
        section = PyMemoryView_FromMemory(<char *>self._p + BATCH_HEADER_SIZE,
                                          self._h.size - BATCH_HEADER_SIZE, PyBUF_READ)
        data = _codecs.decompress(c, section, self._max_uncompressed)
        if not PyBytes_CheckExact(data):
            data = bytes(data)
        if self._rp != NULL:
            # Another thread decompressed it meanwhile (the codecs release the GIL), and
            # views may already point into its copy: keep that one.
            return 0
        self._records = data
        self._rn = PyBytes_GET_SIZE(data)
        self._rp = <const uint8_t *>PyBytes_AS_STRING(data)
        return 0

    @property
    def records_buffer(self):
        """The (uncompressed) records section as a read-only memoryview: a view into the
        batch when it is uncompressed, the decompressed bytes otherwise."""
        self._ensure_records()
        if self._records is not None:
            return memoryview(self._records)
        return memoryview(self)[BATCH_HEADER_SIZE:]

    def __iter__(self):
        self._ensure_records()
        cdef _RecordIterator it = _RecordIterator.__new__(_RecordIterator)
        it.batch = self
        it.p = self._rp
        it.end = self._rp + self._rn
        it.remaining = self._h.records_count
        it.prev_delta = -1
        it.log_append = (self._h.attributes & ATTR_LOG_APPEND_TIME) != 0
        return it

    def records(self):
        """All records as a list."""
        return list(self)

    def columns(self):
        """Decode every record at once into numpy columns: see :class:`RecordColumns`."""
        cdef RecordColumns cols = RecordColumns.__new__(RecordColumns)
        cdef Py_ssize_t n
        cdef ColumnsOut out
        cdef RecordStatus st
        cdef int32_t failed
        self._ensure_records()
        n = self._h.records_count
        if n > self._rn // RECORD_MIN_SIZE:
            raise record_error(RECORD_BAD_COUNT, 0, &self._h)
        if _numpy_module is None:
            _np()
        cols.offsets = pylog_empty_column(n, NPY_INT64)
        cols.timestamps = pylog_empty_column(n, NPY_INT64)
        cols.key_offsets = pylog_empty_column(n, NPY_INT64)
        cols.key_lengths = pylog_empty_column(n, NPY_INT32)
        cols.value_offsets = pylog_empty_column(n, NPY_INT64)
        cols.value_lengths = pylog_empty_column(n, NPY_INT32)
        cols.header_offsets = pylog_empty_column(n, NPY_INT64)
        cols.header_counts = pylog_empty_column(n, NPY_INT32)
        out.offsets = <int64_t *>pylog_array_data(cols.offsets)
        out.timestamps = <int64_t *>pylog_array_data(cols.timestamps)
        out.key_offsets = <int64_t *>pylog_array_data(cols.key_offsets)
        out.key_lengths = <int32_t *>pylog_array_data(cols.key_lengths)
        out.value_offsets = <int64_t *>pylog_array_data(cols.value_offsets)
        out.value_lengths = <int32_t *>pylog_array_data(cols.value_lengths)
        out.header_offsets = <int64_t *>pylog_array_data(cols.header_offsets)
        out.header_counts = <int32_t *>pylog_array_data(cols.header_counts)
        out.starts = NULL
        out.ends = NULL
        if self._rn >= GIL_RELEASE_BYTES:
            with nogil:
                st = decode_records(self._rp, self._rn, &self._h, &out, &failed)
        else:
            st = decode_records(self._rp, self._rn, &self._h, &out, &failed)
        if st != RECORD_OK:
            raise record_error(st, failed, &self._h)
        # The accessors trust these positions; keep them as decoded.
        for arr in (cols.offsets, cols.timestamps, cols.key_offsets, cols.key_lengths,
                    cols.value_offsets, cols.value_lengths, cols.header_offsets, cols.header_counts):
            pylog_array_freeze(arr)
        cols.batch = self
        cols._rp = self._rp
        cols._rn = self._rn
        cols.n = <int32_t>n
        return cols


cdef int init_batch(RecordBatch b, _BufferRef ref, Py_ssize_t pos, Py_ssize_t avail,
                    object max_uncompressed) except -1:
    cdef BatchStatus st
    st = parse_batch_header(<const uint8_t *>ref.view.buf + pos, avail, INT32_MAX, False, &b._h)
    if st != BATCH_OK:
        raise CorruptRecordError(f"{_STATUS_MESSAGES[st]} (at position {pos})")
    if b._h.base_offset > INT64_MAX - b._h.last_offset_delta:
        raise CorruptRecordError(f"record batch last offset overflows 64 bits (at position {pos})")
    b._ref = ref
    b._p = <const uint8_t *>ref.view.buf + pos
    b._max_uncompressed = max_uncompressed
    return 0


@cython.final
cdef class _RecordIterator:
    cdef RecordBatch batch
    cdef const uint8_t *p
    cdef const uint8_t *end
    cdef int32_t remaining
    cdef int32_t prev_delta
    cdef bint log_append

    def __iter__(self):
        return self

    def __next__(self):
        cdef RecordFields f
        cdef RecordStatus st
        cdef Record rec
        if self.batch is None:
            raise StopIteration
        cdef const BatchHeader *h = &self.batch._h
        if self.remaining <= 0:
            if self.remaining == 0 and self.p != self.end:
                self.remaining = -1
                raise record_error(RECORD_TRAILING, h.records_count, h)
            raise StopIteration
        st = read_record(self.p, self.end, &f)
        if st == RECORD_OK and (f.offset_delta <= self.prev_delta or f.offset_delta > h.last_offset_delta):
            st = RECORD_BAD_OFFSET
        if st != RECORD_OK:
            index = h.records_count - self.remaining
            self.remaining = -1
            raise record_error(st, index, h)
        self.prev_delta = f.offset_delta
        self.remaining -= 1
        self.p = f.end
        rec = Record.__new__(Record)
        rec.offset = <int64_t>(h.base_offset + f.offset_delta)
        rec.timestamp = h.max_timestamp if self.log_append else <int64_t>(
            <uint64_t>h.base_timestamp + <uint64_t>f.timestamp_delta)
        rec.key = bytes_or_none(f.key, f.key_length)
        rec.value = bytes_or_none(f.value, f.value_length)
        if f.header_count == 0:
            rec.headers = EMPTY_HEADERS
        else:
            rec.headers = decode_headers(f.headers, f.end, f.header_count)
        return rec


@cython.final
cdef class RecordColumns:
    """Every record of a batch as numpy columns over one records buffer.

    Attributes
    ----------
    offsets, timestamps : ndarray of int64
        Absolute offsets and timestamps.
    key_offsets, value_offsets : ndarray of int64
        Where each key / value starts in :attr:`buffer`.
    key_lengths, value_lengths : ndarray of int32
        Their lengths; -1 for a null key or value.
    header_offsets : ndarray of int64, header_counts : ndarray of int32
        Where each record's headers start in :attr:`buffer`, and how many there are
        (decode them with :meth:`headers`).
    buffer, keys_buffer, values_buffer : memoryview
        The uncompressed records section (the same buffer under three names): a view into
        the batch when it is uncompressed, the decompressed bytes otherwise.

    The arrays are read-only.  ``len(columns)`` is the record count.
    """
    cdef readonly object offsets
    cdef readonly object timestamps
    cdef readonly object key_offsets
    cdef readonly object key_lengths
    cdef readonly object value_offsets
    cdef readonly object value_lengths
    cdef readonly object header_offsets
    cdef readonly object header_counts
    cdef readonly RecordBatch batch
    cdef const uint8_t *_rp
    cdef Py_ssize_t _rn
    cdef int32_t n

    def __len__(self):
        return self.n

    @property
    def buffer(self):
        return self.batch.records_buffer

    @property
    def keys_buffer(self):
        return self.batch.records_buffer

    @property
    def values_buffer(self):
        return self.batch.records_buffer

    cdef Py_ssize_t _index(self, Py_ssize_t i) except -1:
        if i < 0:
            i += self.n
        if i < 0 or i >= self.n:
            raise IndexError(f"record index {i} out of range for {self.n} records")
        return i

    cdef object _slice(self, int64_t off, int32_t n):
        # The arrays are read-only, but numpy lets an owner flip them back to writable:
        # never trust them for a read.
        if off < 0 or off > self._rn or n > self._rn - off:
            raise IndexError("record column positions were modified")
        return bytes_or_none(self._rp + off, n)

    def key(self, Py_ssize_t i):
        """Key of record ``i`` as bytes, or None."""
        i = self._index(i)
        return self._slice((<int64_t *>pylog_array_data(self.key_offsets))[i],
                           (<int32_t *>pylog_array_data(self.key_lengths))[i])

    def value(self, Py_ssize_t i):
        """Value of record ``i`` as bytes, or None."""
        i = self._index(i)
        return self._slice((<int64_t *>pylog_array_data(self.value_offsets))[i],
                           (<int32_t *>pylog_array_data(self.value_lengths))[i])

    def headers(self, Py_ssize_t i):
        """Headers of record ``i`` as a tuple of (str, bytes or None)."""
        i = self._index(i)
        cdef int64_t off = (<int64_t *>pylog_array_data(self.header_offsets))[i]
        cdef int32_t count = (<int32_t *>pylog_array_data(self.header_counts))[i]
        if off < 0 or off > self._rn or count < 0 or count > self._rn - off:
            raise IndexError("record column positions were modified")
        return decode_headers(self._rp + off, self._rp + self._rn, count)

    def keys(self):
        """Every key, as a list of bytes or None."""
        cdef list out = [None] * self.n
        cdef int64_t *off = <int64_t *>pylog_array_data(self.key_offsets)
        cdef int32_t *ln = <int32_t *>pylog_array_data(self.key_lengths)
        cdef Py_ssize_t i
        for i in range(self.n):
            out[i] = self._slice(off[i], ln[i])
        return out

    def values(self):
        """Every value, as a list of bytes or None."""
        cdef list out = [None] * self.n
        cdef int64_t *off = <int64_t *>pylog_array_data(self.value_offsets)
        cdef int32_t *ln = <int32_t *>pylog_array_data(self.value_lengths)
        cdef Py_ssize_t i
        for i in range(self.n):
            out[i] = self._slice(off[i], ln[i])
        return out


# ---------------------------------------------------------------------------------------
# iter_batches

@cython.final
cdef class _BatchIterator:
    cdef _BufferRef ref
    cdef Py_ssize_t pos
    cdef Py_ssize_t max_size
    cdef bint check_crc
    cdef object max_uncompressed
    cdef bint done

    def __iter__(self):
        return self

    def __next__(self):
        cdef BatchHeader h
        cdef BatchStatus st
        cdef Py_ssize_t avail
        cdef const uint8_t *p
        cdef RecordBatch b
        if self.done or self.ref is None:
            raise StopIteration
        avail = self.ref.view.len - self.pos
        p = <const uint8_t *>self.ref.view.buf + self.pos
        if avail == 0:
            self.done = True
            raise StopIteration
        if self.check_crc and avail >= GIL_RELEASE_BYTES:
            with nogil:
                st = parse_batch_header(p, avail, self.max_size, True, &h)
        else:
            st = parse_batch_header(p, avail, self.max_size, self.check_crc, &h)
        if st == BATCH_TRUNCATED_HEADER or st == BATCH_TRUNCATED_BODY:
            # A fetch response may end inside a batch: that partial batch is not data.
            # Its header, when there, must still look like a batch.
            if avail > BATCH_MAGIC and p[BATCH_MAGIC] != 2:
                self.done = True
                raise CorruptRecordError(
                    f"{_STATUS_MESSAGES[BATCH_BAD_MAGIC]} (at position {self.pos})")
            if st == BATCH_TRUNCATED_HEADER and avail >= BATCH_LENGTH + 4 and (
                    pylog_be32(p + BATCH_LENGTH) < BATCH_MIN_LENGTH):
                self.done = True
                raise CorruptRecordError(f"{_STATUS_MESSAGES[BATCH_BAD_LENGTH]} (at position {self.pos})")
            self.done = True
            raise StopIteration
        if st != BATCH_OK:
            self.done = True
            if st == BATCH_BAD_LENGTH and h.batch_length >= BATCH_MIN_LENGTH:
                raise RecordTooLargeError(
                    f"record batch of {<int64_t>h.batch_length + 12} bytes at position {self.pos} "
                    f"is larger than the limit of {self.max_size} bytes")
            raise CorruptRecordError(f"{_STATUS_MESSAGES[st]} (at position {self.pos})")
        if h.base_offset > INT64_MAX - h.last_offset_delta:
            self.done = True
            raise CorruptRecordError(f"record batch last offset overflows 64 bits (at position {self.pos})")
        b = RecordBatch.__new__(RecordBatch)
        b._h = h
        b._ref = self.ref
        b._p = p
        b._max_uncompressed = self.max_uncompressed
        self.pos += h.size
        return b

    @property
    def position(self):
        """Position just past the last batch returned."""
        return self.pos


def iter_batches(buffer, *, bint check_crc=True, Py_ssize_t max_size=DEFAULT_MAX_BATCH_SIZE,
                 max_uncompressed=None):
    """Iterate the batches of a run of concatenated v2 batches, without copying.

    Yields a :class:`RecordBatch` view of each.  A partial batch at the end (as a Kafka
    fetch response may hold) ends the iteration; a corrupt batch raises.  The iterator's
    ``position`` attribute is the byte position after the last batch yielded.

    Parameters
    ----------
    buffer
        A bytes-like object (bytes, bytearray, memoryview, mmap).
    check_crc
        Check each batch's CRC32C (on by default, as Kafka consumers' ``check.crcs``).
    max_size
        Largest batch accepted (default 100 MiB).
    max_uncompressed
        Passed to each :class:`RecordBatch`.

    Raises
    ------
    CorruptRecordError
        A batch with a bad length, magic, counts, offsets or CRC.
    RecordTooLargeError
        A batch larger than ``max_size``.
    """
    cdef _BatchIterator it = _BatchIterator.__new__(_BatchIterator)
    it.ref = acquire_buffer(buffer)
    it.pos = 0
    it.max_size = max_size
    it.check_crc = check_crc
    it.max_uncompressed = max_uncompressed
    it.done = False
    return it


# ---------------------------------------------------------------------------------------
# RecordBatchBuilder

cdef int codec_from(object compression) except -1:
    if compression is None:
        return 0
    try:
        return _codecs.codec_id(compression)
    except UnsupportedCompressionTypeError:
        raise
    except Exception:
        raise UnsupportedCompressionTypeError(f"unknown compression {compression!r}")


cdef inline tuple snapshot(object seq, str message):
    if type(seq) is tuple:
        return <tuple>seq
    if type(seq) is list:
        return tuple(<list>seq)
    try:
        return tuple(seq)
    except TypeError:
        raise TypeError(message) from None


cdef struct Span:
    const char *p
    Py_ssize_t n          # -1: null


cdef inline int get_span(object obj, Span *s, Py_buffer *view, bint *held, str what) except -1:
    """Point s at obj's bytes: bytes directly, other bytes-like objects through a buffer
    export (released by the caller when *held), None as null."""
    if obj is None:
        s.p = NULL
        s.n = -1
    elif PyBytes_CheckExact(obj):
        s.p = PyBytes_AS_STRING(obj)
        s.n = PyBytes_GET_SIZE(obj)
    else:
        if isinstance(obj, str):
            raise TypeError(f"record {what} must be bytes-like or None, not str (encode it first)")
        PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
        held[0] = True
        s.p = <const char *>view.buf
        s.n = view.len
    if s.n > INT32_MAX:
        raise RecordTooLargeError(f"record {what} of {s.n} bytes is larger than 2 GiB")
    return 0


cdef tuple encode_headers(object headers, int32_t *count, Py_ssize_t *size):
    """Check a headers sequence of (str, bytes-like or None) and return it as a tuple of
    (str, bytes or None) pairs, with its count and encoded size.

    The result is immutable, so the size computed here is the size write_headers writes,
    whatever code a user's sequence or buffer objects run in between."""
    cdef Py_ssize_t n, i, kn, vn, total = 0
    cdef object seq, item, hk, hv
    cdef tuple out
    count[0] = 0
    size[0] = 0
    if not headers:
        return EMPTY_HEADERS
    seq = PySequence_Fast(headers, "record headers must be a sequence of (str, bytes) pairs")
    n = PySequence_Fast_GET_SIZE(seq)
    if n > INT32_MAX:
        raise RecordTooLargeError("too many record headers")
    out = PyTuple_New(n)
    for i in range(n):
        item = <object>PySequence_Fast_GET_ITEM(seq, i)
        if type(item) is tuple and len(<tuple>item) == 2:
            hk = (<tuple>item)[0]
            hv = (<tuple>item)[1]
        else:
            try:
                hk, hv = item
            except (TypeError, ValueError):
                raise TypeError(f"record header {item!r} is not a (str, bytes) pair") from None
        if not isinstance(hk, str):
            raise TypeError(f"record header key must be str, not {type(hk).__name__}")
        if hv is not None and not PyBytes_CheckExact(hv):
            if isinstance(hv, str):
                raise TypeError("record header value must be bytes-like or None, not str")
            hv = bytes(memoryview(hv).cast("B"))
        if type(item) is not tuple or hv is not (<tuple>item)[1]:
            item = (hk, hv)
        Py_INCREF(item)
        PyTuple_SET_ITEM(out, i, item)
        PyUnicode_AsUTF8AndSize(hk, &kn)
        vn = -1 if hv is None else PyBytes_GET_SIZE(hv)
        total += varint_size(kn) + kn + varint_size(vn) + (vn if vn > 0 else 0)
        if total > INT32_MAX:
            raise RecordTooLargeError("record headers are larger than 2 GiB")
    count[0] = <int32_t>n
    size[0] = total
    return out


cdef uint8_t *write_headers(uint8_t *p, const uint8_t *end, tuple headers) except NULL:
    """Write headers returned by encode_headers into [p, end)."""
    cdef Py_ssize_t kn, vn
    cdef const char *k
    for item in headers:
        hk = (<tuple>item)[0]
        hv = (<tuple>item)[1]
        k = PyUnicode_AsUTF8AndSize(hk, &kn)
        vn = -1 if hv is None else PyBytes_GET_SIZE(hv)
        if kn + vn + 20 > end - p:
            raise RuntimeError("record headers changed while being written")
        p = put_varint(p, kn)
        memcpy(p, k, kn)
        p += kn
        p = put_varint(p, vn)
        if vn > 0:
            memcpy(p, PyBytes_AS_STRING(hv), vn)
            p += vn
    return p


# Records-section limit: batchLength is an int32 and counts 49 header bytes.
cdef Py_ssize_t MAX_BATCH_BYTES = INT32_MAX - 64


@cython.final
cdef class RecordBatchBuilder:
    """Build one v2 record batch, record by record or in bulk, in a growing C buffer.

    Records get consecutive offset deltas 0, 1, 2, ...; the batch's baseTimestamp is the
    first record's timestamp.  :meth:`build` compresses the records section as one block
    (when a codec is set), fills in the header and CRC32C, and returns the batch bytes.

    Parameters
    ----------
    base_offset : int
        Offset of the first record (a producer writes 0; the broker assigns offsets).
    compression : {"none", "gzip", "snappy", "lz4", "zstd"} or int
    producer_id, producer_epoch, base_sequence : int
        Idempotent/transactional producer fields (-1: none).
    is_transactional, is_control : bool
    partition_leader_epoch : int
    timestamp_type : {"create", "log_append"}
    batch_size : int
        Target size for :meth:`has_room_for` (Kafka's ``batch.size``, default 16 KiB).

    Not thread-safe: one builder is filled by one thread or task.
    """
    cdef uint8_t *buf
    cdef Py_ssize_t length        # bytes used, the 61 header bytes included
    cdef Py_ssize_t capacity
    cdef int32_t count
    cdef int64_t base_ts
    cdef int64_t max_ts
    cdef int codec
    cdef readonly int64_t base_offset
    cdef readonly int64_t producer_id
    cdef readonly int16_t producer_epoch
    cdef readonly int32_t base_sequence
    cdef readonly int32_t partition_leader_epoch
    cdef readonly bint is_transactional
    cdef readonly bint is_control
    cdef readonly bint log_append_time
    cdef readonly Py_ssize_t batch_size
    cdef bint busy                # append_columns is writing without the GIL

    def __cinit__(self):
        self.buf = NULL

    def __init__(self, int64_t base_offset=0, compression="none", int64_t producer_id=-1,
                 int producer_epoch=-1, int32_t base_sequence=-1, bint is_transactional=False,
                 bint is_control=False, int32_t partition_leader_epoch=-1,
                 timestamp_type="create", Py_ssize_t batch_size=16384):
        if self.busy:
            raise RuntimeError("RecordBatchBuilder is being appended to by another thread")
        if timestamp_type not in ("create", "log_append"):
            raise ValueError(f"timestamp_type must be 'create' or 'log_append', not {timestamp_type!r}")
        if not -32768 <= producer_epoch <= 32767:
            raise ValueError(f"producer_epoch {producer_epoch} does not fit an int16")
        if base_offset < 0:
            raise ValueError(f"base_offset must be >= 0, not {base_offset}")
        self.codec = codec_from(compression)
        self.base_offset = base_offset
        self.producer_id = producer_id
        self.producer_epoch = <int16_t>producer_epoch
        self.base_sequence = base_sequence
        self.is_transactional = is_transactional
        self.is_control = is_control
        self.partition_leader_epoch = partition_leader_epoch
        self.log_append_time = timestamp_type == "log_append"
        self.batch_size = batch_size
        if self.buf == NULL:
            self.capacity = 4096
            self.buf = <uint8_t *>PyMem_Malloc(self.capacity)
            if self.buf == NULL:
                raise MemoryError()
        self.length = BATCH_HEADER_SIZE
        self.count = 0
        self.base_ts = -1
        self.max_ts = -1

    def __dealloc__(self):
        PyMem_Free(self.buf)
        self.buf = NULL

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need, cap
        cdef uint8_t *nb
        if self.buf == NULL:
            raise ValueError("RecordBatchBuilder was not initialised")
        if self.busy:
            raise RuntimeError("RecordBatchBuilder is being appended to by another thread")
        if extra > MAX_BATCH_BYTES - self.length:
            raise RecordBatchTooLargeError(
                "record batch would exceed 2 GiB (batchLength is an int32): build() it and "
                "start a new one")
        need = self.length + extra
        if need <= self.capacity:
            return 0
        cap = self.capacity
        while cap < need:
            cap = cap * 2 if cap < MAX_BATCH_BYTES // 2 else MAX_BATCH_BYTES
        nb = <uint8_t *>PyMem_Realloc(self.buf, cap)
        if nb == NULL:
            raise MemoryError()
        self.buf = nb
        self.capacity = cap
        return 0

    cdef inline int _start_record(self, int64_t ts) except -1:
        if self.count == INT32_MAX:
            raise RecordBatchTooLargeError("a record batch holds at most 2**31 - 1 records")
        if self.count == 0:
            self.base_ts = ts
            self.max_ts = ts
        elif ts > self.max_ts:
            self.max_ts = ts
        return 0

    cdef inline uint8_t *_write_record(self, uint8_t *p, int64_t ts, const char *kp, Py_ssize_t kn,
                                       const char *vp, Py_ssize_t vn, int32_t hcount,
                                       Py_ssize_t hsize) noexcept nogil:
        """Write one record's length, fixed fields, key, value and header count; the
        caller writes hsize bytes of headers after it.  Capacity is the caller's job."""
        cdef int64_t ts_delta = <int64_t>(<uint64_t>ts - <uint64_t>self.base_ts)
        cdef int32_t od = self.count
        cdef Py_ssize_t body = (1 + varint_size(ts_delta) + varint_size(od)
                                + varint_size(kn) + (kn if kn > 0 else 0)
                                + varint_size(vn) + (vn if vn > 0 else 0)
                                + varint_size(hcount) + hsize)
        p = put_varint(p, body)
        p[0] = 0  # record attributes
        p = put_varint(p + 1, ts_delta)
        p = put_varint(p, od)
        p = put_varint(p, kn)
        if kn > 0:
            memcpy(p, kp, kn)
            p += kn
        p = put_varint(p, vn)
        if vn > 0:
            memcpy(p, vp, vn)
            p += vn
        p = put_varint(p, hcount)
        return p

    def append(self, timestamp_ms, key, value, headers=()):
        """Append one record.

        Its offset delta is ``len(builder)`` before the call.

        Parameters
        ----------
        timestamp_ms : int or None
            Milliseconds since the epoch; None is now.
        key, value : bytes-like or None
        headers : sequence of (str, bytes-like or None)

        Raises
        ------
        TypeError
            A key, value or header of the wrong type.
        RecordBatchTooLargeError
            The batch would pass 2 GiB or 2**31 - 1 records.
        """
        cdef int64_t ts = pylog_now_ms() if timestamp_ms is None else (
            <int64_t>timestamp_ms if PyLong_CheckExact(timestamp_ms) else <int64_t>PyNumber_Index(timestamp_ms))
        cdef Span k, v
        cdef Py_buffer kview, vview
        cdef bint kheld = False, vheld = False
        cdef int32_t hcount = 0
        cdef Py_ssize_t hsize = 0
        cdef uint8_t *p
        cdef tuple hdrs = EMPTY_HEADERS
        try:
            get_span(key, &k, &kview, &kheld, "key")
            get_span(value, &v, &vview, &vheld, "value")
            if headers:
                hdrs = encode_headers(headers, &hcount, &hsize)
            self._reserve(RECORD_MAX_OVERHEAD + (k.n if k.n > 0 else 0) + (v.n if v.n > 0 else 0) + hsize)
            self._start_record(ts)
            p = self._write_record(self.buf + self.length, ts, k.p, k.n, v.p, v.n, hcount, hsize)
            if hcount:
                p = write_headers(p, self.buf + self.capacity, hdrs)
            self.length = p - self.buf
            self.count += 1
        finally:
            if kheld:
                PyBuffer_Release(&kview)
            if vheld:
                PyBuffer_Release(&vview)

    def append_many(self, values, keys=None, timestamps=None, headers=None):
        """Append one record per value, in one C loop.

        Parameters
        ----------
        values : sequence of bytes-like or None
            A list (fastest) or any sequence.
        keys : sequence of bytes-like or None, optional
            Same length as values; None: every key null.
        timestamps : int, sequence of int, or int64 array, optional
            One timestamp for all, or one per record; None: now.
        headers : sequence of header sequences, optional
            One per record.
        """
        # Tuples: a snapshot no code run during the loop (a buffer export, an __index__)
        # can resize under the item pointers.
        cdef object vseq = snapshot(values, "values must be a sequence of bytes-like objects")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(vseq)
        cdef object kseq = None, tseq = None, hseq = None
        cdef Py_ssize_t i, total = 0
        cdef int64_t ts, ts_const = 0
        cdef const int64_t *tsp = NULL
        cdef _BufferRef tref
        cdef object v_obj, k_obj, h_obj
        cdef Span k, v
        cdef Py_buffer kview, vview
        cdef bint kheld, vheld
        cdef int32_t hcount
        cdef Py_ssize_t hsize
        cdef uint8_t *p
        cdef PyObject **vitems
        cdef PyObject **kitems
        cdef PyObject **titems
        cdef PyObject *o
        cdef bint simple
        cdef tuple hdrs
        if n == 0:
            return
        if keys is not None:
            kseq = snapshot(keys, "keys must be a sequence of bytes-like objects")
            if PySequence_Fast_GET_SIZE(kseq) != n:
                raise ValueError(f"{PySequence_Fast_GET_SIZE(kseq)} keys for {n} values")
        if headers is not None:
            hseq = snapshot(headers, "headers must be a sequence (one per record)")
            if PySequence_Fast_GET_SIZE(hseq) != n:
                raise ValueError(f"{PySequence_Fast_GET_SIZE(hseq)} header lists for {n} values")
        if timestamps is None:
            ts_const = pylog_now_ms()
        elif isinstance(timestamps, int):
            ts_const = timestamps
        elif _is_ndarray(timestamps):
            tref = acquire_int64_column(timestamps, n, "timestamps")
            tsp = <const int64_t *>tref.view.buf
        else:
            tseq = snapshot(timestamps, "timestamps must be an int, a sequence or an int64 array")
            if PySequence_Fast_GET_SIZE(tseq) != n:
                raise ValueError(f"{PySequence_Fast_GET_SIZE(tseq)} timestamps for {n} values")
        if n > INT32_MAX - self.count:
            raise RecordBatchTooLargeError("a record batch holds at most 2**31 - 1 records")
        # First pass: size the buffer once, and see whether every value and key is bytes
        # or None (then the write loop needs no buffer exports and no reallocation).
        vitems = PySequence_Fast_ITEMS(vseq)
        kitems = PySequence_Fast_ITEMS(kseq) if kseq is not None else NULL
        titems = PySequence_Fast_ITEMS(tseq) if tseq is not None else NULL
        simple = hseq is None
        for i in range(n):
            o = vitems[i]
            if PyBytes_CheckExact(<object>o):
                total += PyBytes_GET_SIZE(<object>o)
            elif o != <PyObject *>None:
                simple = False
            if kitems != NULL:
                o = kitems[i]
                if PyBytes_CheckExact(<object>o):
                    total += PyBytes_GET_SIZE(<object>o)
                elif o != <PyObject *>None:
                    simple = False
            if titems != NULL and not PyLong_CheckExact(<object>titems[i]):
                simple = False  # converting it may run Python code: take the careful loop
            total += RECORD_MAX_OVERHEAD
            if total > MAX_BATCH_BYTES:
                raise RecordBatchTooLargeError(
                    "record batch would exceed 2 GiB (batchLength is an int32): append fewer records")
        self._reserve(total)
        if simple:
            p = self.buf + self.length
            for i in range(n):
                if tsp != NULL:
                    ts = tsp[i]
                elif titems != NULL:
                    ts = <object>titems[i]  # Cython's int64 conversion: fast for 2-digit ints
                else:
                    ts = ts_const
                if self.count == 0:
                    self.base_ts = ts
                    self.max_ts = ts
                elif ts > self.max_ts:
                    self.max_ts = ts
                o = vitems[i]
                if o == <PyObject *>None:
                    v.p = NULL
                    v.n = -1
                else:
                    v.p = PyBytes_AS_STRING(<object>o)
                    v.n = PyBytes_GET_SIZE(<object>o)
                if kitems == NULL or kitems[i] == <PyObject *>None:
                    k.p = NULL
                    k.n = -1
                else:
                    k.p = PyBytes_AS_STRING(<object>kitems[i])
                    k.n = PyBytes_GET_SIZE(<object>kitems[i])
                p = self._write_record(p, ts, k.p, k.n, v.p, v.n, 0, 0)
                self.count += 1
                # Keep length current: a bad timestamp raises mid-loop.
                self.length = p - self.buf
            return
        for i in range(n):
            kheld = vheld = False
            hcount = 0
            hsize = 0
            try:
                get_span(<object>vitems[i], &v, &vview, &vheld, "value")
                if kitems != NULL:
                    get_span(<object>kitems[i], &k, &kview, &kheld, "key")
                else:
                    k.p = NULL
                    k.n = -1
                hdrs = EMPTY_HEADERS
                if hseq is not None:
                    h_obj = <object>PySequence_Fast_GET_ITEM(hseq, i)
                    if h_obj:
                        hdrs = encode_headers(h_obj, &hcount, &hsize)
                if tsp != NULL:
                    ts = tsp[i]
                elif titems != NULL:
                    ts = PyNumber_Index(<object>titems[i])
                else:
                    ts = ts_const
                self._reserve(RECORD_MAX_OVERHEAD + (k.n if k.n > 0 else 0) + (v.n if v.n > 0 else 0) + hsize)
                self._start_record(ts)
                p = self._write_record(self.buf + self.length, ts, k.p, k.n, v.p, v.n, hcount, hsize)
                if hcount:
                    p = write_headers(p, self.buf + self.capacity, hdrs)
                self.length = p - self.buf
                self.count += 1
            finally:
                if kheld:
                    PyBuffer_Release(&kview)
                if vheld:
                    PyBuffer_Release(&vview)

    def append_columns(self, data_buffer, value_offsets, timestamps=None, key_buffer=None,
                       key_offsets=None):
        """Append records from columns: value ``i`` is
        ``data_buffer[value_offsets[i]:value_offsets[i + 1]]``, and likewise keys.

        Parameters
        ----------
        data_buffer : bytes-like
            Every value, back to back.
        value_offsets : int64 array of len n + 1
            Non-decreasing positions in data_buffer.
        timestamps : int, or int64 array of len n, optional
            None: now.
        key_buffer, key_offsets : optional
            Keys the same way (len n + 1 offsets); without them every key is null.

        The write loop runs without the GIL.
        """
        cdef _BufferRef dref = acquire_buffer(data_buffer)
        cdef _BufferRef vref = acquire_int64_column(value_offsets, -1, "value_offsets")
        cdef Py_ssize_t n = vref.view.len // 8 - 1
        cdef _BufferRef kref = None, koref = None, tref = None
        cdef const int64_t *voff = <const int64_t *>vref.view.buf
        cdef const int64_t *koff = NULL
        cdef const int64_t *tsp = NULL
        cdef const char *data = <const char *>dref.view.buf
        cdef const char *kdata = NULL
        cdef int64_t ts_const = 0, ts, kstart, kend, vstart, vend
        cdef int64_t saved_base_ts, saved_max_ts
        cdef Py_ssize_t i, total, failed = -1, dlen, klen_total, saved_length
        cdef int32_t saved_count
        cdef uint8_t *p
        cdef uint8_t *limit
        if n < 0:
            raise ValueError("value_offsets needs n + 1 entries")
        if n == 0:
            return
        if (key_buffer is None) != (key_offsets is None):
            raise ValueError("pass key_buffer and key_offsets together")
        if key_buffer is not None:
            kref = acquire_buffer(key_buffer)
            koref = acquire_int64_column(key_offsets, n + 1, "key_offsets")
            koff = <const int64_t *>koref.view.buf
            kdata = <const char *>kref.view.buf
            check_ends(koff, n, kref.view.len, "key_offsets")
        check_ends(voff, n, dref.view.len, "value_offsets")
        if timestamps is None:
            ts_const = pylog_now_ms()
        elif isinstance(timestamps, int):
            ts_const = timestamps
        else:
            tref = acquire_int64_column(timestamps, n, "timestamps")
            tsp = <const int64_t *>tref.view.buf
        if n > INT32_MAX - self.count:
            raise RecordBatchTooLargeError("a record batch holds at most 2**31 - 1 records")
        total = n * RECORD_MAX_OVERHEAD + (voff[n] - voff[0]) + ((koff[n] - koff[0]) if koff != NULL else 0)
        self._reserve(total)
        saved_length, saved_count, saved_base_ts, saved_max_ts = self.length, self.count, self.base_ts, self.max_ts
        dlen = dref.view.len
        klen_total = kref.view.len if kref is not None else 0
        self.busy = True
        with nogil:
            # Offsets are checked here, as they are used: the arrays stay writable by
            # other threads while the GIL is released.
            p = self.buf + self.length
            limit = self.buf + self.capacity
            for i in range(n):
                vstart = voff[i]
                vend = voff[i + 1]
                if vstart < 0 or vend < vstart or vend > dlen or vend - vstart > INT32_MAX:
                    failed = i
                    break
                if koff != NULL:
                    kstart = koff[i]
                    kend = koff[i + 1]
                    if kstart < 0 or kend < kstart or kend > klen_total or kend - kstart > INT32_MAX:
                        failed = i
                        break
                else:
                    kstart = 0
                    kend = -1
                if limit - p < RECORD_MAX_OVERHEAD + (vend - vstart) + (kend - kstart if kend > kstart else 0):
                    failed = i
                    break
                ts = tsp[i] if tsp != NULL else ts_const
                if self.count == 0:
                    self.base_ts = ts
                    self.max_ts = ts
                elif ts > self.max_ts:
                    self.max_ts = ts
                if koff != NULL:
                    p = self._write_record(p, ts, kdata + kstart, kend - kstart,
                                           data + vstart, vend - vstart, 0, 0)
                else:
                    p = self._write_record(p, ts, NULL, -1, data + vstart, vend - vstart, 0, 0)
                self.count += 1
            self.length = p - self.buf
        self.busy = False
        if failed >= 0:
            # A rejected append leaves the builder as it was.
            self.length, self.count, self.base_ts, self.max_ts = saved_length, saved_count, saved_base_ts, saved_max_ts
            raise ValueError(
                f"value_offsets/key_offsets at index {failed} are decreasing or outside their buffer")

    def set_producer_state(self, int64_t producer_id, int producer_epoch, int32_t base_sequence):
        """Set the idempotent-producer fields (when the sequence is known only at drain time)."""
        if not -32768 <= producer_epoch <= 32767:
            raise ValueError(f"producer_epoch {producer_epoch} does not fit an int16")
        self.producer_id = producer_id
        self.producer_epoch = <int16_t>producer_epoch
        self.base_sequence = base_sequence

    def __len__(self):
        return self.count

    @property
    def compression(self):
        return _CODEC_NAMES[self.codec]

    @property
    def timestamp_type(self):
        return "log_append" if self.log_append_time else "create"

    def size_in_bytes(self):
        """Size of the batch as built without compression (exact for an uncompressed
        batch; an upper bound, in practice, for a compressed one)."""
        return self.length

    def estimated_size(self):
        """What the producer compares with ``batch.size``: the uncompressed size so far."""
        return self.length

    def record_size_upper_bound(self, Py_ssize_t key_len, Py_ssize_t value_len, headers=None):
        """Most bytes one more record of these sizes can take (-1 length: null)."""
        cdef int32_t hcount = 0
        cdef Py_ssize_t hsize = 0
        if headers:
            encode_headers(headers, &hcount, &hsize)
        return RECORD_MAX_OVERHEAD + (key_len if key_len > 0 else 0) + (value_len if value_len > 0 else 0) + hsize

    def has_room_for(self, Py_ssize_t key_len, Py_ssize_t value_len, headers=None):
        """Whether one more record of these sizes keeps the batch within ``batch_size``.

        An empty builder always has room (Kafka sends an oversized record in a batch of
        its own)."""
        if self.count == 0:
            return True
        return self.length + self.record_size_upper_bound(key_len, value_len, headers) <= self.batch_size

    def build(self):
        """The batch: header, CRC32C and the (compressed) records section, as bytes.

        The builder is left as it was: more records may be appended and build() called
        again."""
        cdef int16_t attributes = self.codec
        cdef Py_ssize_t records_len = self.length - BATCH_HEADER_SIZE
        cdef Py_ssize_t size
        cdef object out
        cdef uint8_t *o
        if self.buf == NULL:
            raise ValueError("RecordBatchBuilder was not initialised")
        if self.busy:
            raise RuntimeError("RecordBatchBuilder is being appended to by another thread")
        if self.log_append_time:
            attributes |= ATTR_LOG_APPEND_TIME
        if self.is_transactional:
            attributes |= ATTR_TRANSACTIONAL
        if self.is_control:
            attributes |= ATTR_CONTROL
        if self.codec == 0:
            size = self.length
            out = PyBytes_FromStringAndSize(NULL, size)
            o = <uint8_t *>PyBytes_AS_STRING(out)
            memcpy(o + BATCH_HEADER_SIZE, self.buf + BATCH_HEADER_SIZE, records_len)
        else:
            section = PyMemoryView_FromMemory(<char *>self.buf + BATCH_HEADER_SIZE, records_len, PyBUF_READ)
            compressed = _codecs.compress(self.codec, section)
            section.release()
            size = BATCH_HEADER_SIZE + len(compressed)
            if size > MAX_BATCH_BYTES:
                raise RecordBatchTooLargeError("compressed record batch exceeds 2 GiB")
            out = PyBytes_FromStringAndSize(NULL, size)
            o = <uint8_t *>PyBytes_AS_STRING(out)
            memcpy(o + BATCH_HEADER_SIZE, PyBytes_AS_STRING(compressed), size - BATCH_HEADER_SIZE)
        write_header(o, size, self.base_offset, self.partition_leader_epoch, attributes,
                     self.count - 1 if self.count > 0 else 0, self.base_ts, self.max_ts,
                     self.producer_id, self.producer_epoch, self.base_sequence, self.count)
        return out


cdef void write_header(uint8_t *o, Py_ssize_t size, int64_t base_offset, int32_t leader_epoch,
                       int16_t attributes, int32_t last_offset_delta, int64_t base_ts,
                       int64_t max_ts, int64_t producer_id, int16_t producer_epoch,
                       int32_t base_sequence, int32_t count) noexcept nogil:
    """Fill the 61 header bytes of a size-byte batch at o and its CRC32C."""
    pylog_put_be64(o + BATCH_BASE_OFFSET, base_offset)
    pylog_put_be32(o + BATCH_LENGTH, <int32_t>(size - BATCH_LENGTH_OVERHEAD))
    pylog_put_be32(o + BATCH_LEADER_EPOCH, leader_epoch)
    o[BATCH_MAGIC] = 2
    pylog_put_be16(o + BATCH_ATTRIBUTES, attributes)
    pylog_put_be32(o + BATCH_LAST_OFFSET_DELTA, last_offset_delta)
    pylog_put_be64(o + BATCH_BASE_TIMESTAMP, base_ts)
    pylog_put_be64(o + BATCH_MAX_TIMESTAMP, max_ts)
    pylog_put_be64(o + BATCH_PRODUCER_ID, producer_id)
    pylog_put_be16(o + BATCH_PRODUCER_EPOCH, producer_epoch)
    pylog_put_be32(o + BATCH_BASE_SEQUENCE, base_sequence)
    pylog_put_be32(o + BATCH_RECORDS_COUNT, count)
    pylog_put_be32(o + BATCH_CRC, <int32_t>pylog_crc32c(0, o + BATCH_ATTRIBUTES, <size_t>(size - BATCH_ATTRIBUTES)))


cdef _BufferRef acquire_int64_column(object arr, Py_ssize_t n, str what):
    """A C-contiguous int64 buffer of n items (n < 0: any length)."""
    cdef _BufferRef ref
    if _is_ndarray(arr):
        if pylog_array_type(arr) != NPY_INT64 and arr.dtype != "int64":
            raise TypeError(f"{what} must be an int64 array, not {arr.dtype}")
        if not pylog_array_c_contiguous(arr):
            arr = arr.copy()
    elif not isinstance(arr, memoryview) or (<memoryview>arr).format not in ("q", "l", "<q", "=q"):
        np = _np()
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    ref = acquire_buffer(arr)
    if ref.view.len % 8 != 0:
        raise ValueError(f"{what} must be int64")
    if n >= 0 and ref.view.len // 8 != n:
        raise ValueError(f"{what} has {ref.view.len // 8} entries, {n} expected")
    return ref


cdef int check_ends(const int64_t *off, Py_ssize_t n, Py_ssize_t buflen, str what) except -1:
    """The first and last offsets lie in the buffer (the write loop checks the others)."""
    if off[0] < 0 or off[n] > buflen or off[n] < off[0]:
        raise ValueError(f"{what} run outside a buffer of {buflen} bytes")
    return 0


# ---------------------------------------------------------------------------------------
# filter_batch: the log cleaner's re-encode

def filter_batch(batch, keep, *, max_uncompressed=None):
    """Re-encode ``batch`` keeping only the records where ``keep`` is true.

    Kept records are copied as they are, so each keeps its offset delta and timestamp
    delta; the new batch keeps the base offset, baseTimestamp, lastOffsetDelta (so the
    producer's last sequence survives compaction, as in Kafka's ``MemoryRecords.filterTo``),
    partition leader epoch, producer id/epoch/base sequence, attributes and codec (the
    records are recompressed).  maxTimestamp is recomputed from the kept records (kept as
    it was for LogAppendTime).

    Parameters
    ----------
    batch : RecordBatch or bytes-like
    keep : array of bool (or uint8), one per record
    max_uncompressed : int, optional
        Passed to :class:`RecordBatch` when ``batch`` is bytes-like.

    Returns
    -------
    bytes or None
        The new batch, or None when no record is kept.

    Raises
    ------
    CorruptRecordError
        The batch's records are malformed.
    ValueError
        ``keep`` does not have one entry per record.
    """
    cdef RecordBatch b
    cdef _BufferRef kref
    cdef const uint8_t *mask
    cdef Py_ssize_t n, i, kept = 0, body = 0
    cdef int64_t *starts = NULL
    cdef int64_t *ends = NULL
    cdef int64_t *tss = NULL
    cdef int64_t max_ts
    cdef ColumnsOut out
    cdef RecordStatus st
    cdef int32_t failed
    cdef uint8_t *o
    cdef bint log_append
    if isinstance(batch, RecordBatch):
        b = <RecordBatch>batch
    else:
        b = RecordBatch(batch, max_uncompressed=max_uncompressed)
    np = _np()
    # A private copy: the two passes over it below must see the same values.
    keep = np.array(keep, dtype=np.bool_, order="C", copy=True)
    n = b._h.records_count
    if keep.ndim != 1 or keep.shape[0] != n:
        raise ValueError(f"keep has {keep.size} entries for a batch of {n} records")
    if n == 0:
        return None
    kref = acquire_buffer(keep)
    mask = <const uint8_t *>kref.view.buf
    b._ensure_records()
    if n > b._rn // RECORD_MIN_SIZE:
        raise record_error(RECORD_BAD_COUNT, 0, &b._h)
    starts = <int64_t *>PyMem_Malloc(n * 3 * sizeof(int64_t))
    if starts == NULL:
        raise MemoryError()
    ends = starts + n
    tss = ends + n
    try:
        memset(&out, 0, sizeof(out))
        out.starts = starts
        out.ends = ends
        out.timestamps = tss
        st = decode_records(b._rp, b._rn, &b._h, &out, &failed)
        if st != RECORD_OK:
            raise record_error(st, failed, &b._h)
        log_append = (b._h.attributes & ATTR_LOG_APPEND_TIME) != 0
        max_ts = b._h.max_timestamp if log_append else INT64_MIN
        for i in range(n):
            if mask[i]:
                kept += 1
                body += ends[i] - starts[i]
                if not log_append and tss[i] > max_ts:
                    max_ts = tss[i]
        if kept == 0:
            return None
        section = PyBytes_FromStringAndSize(NULL, body)
        o = <uint8_t *>PyBytes_AS_STRING(section)
        for i in range(n):
            if mask[i]:
                memcpy(o, b._rp + starts[i], ends[i] - starts[i])
                o += ends[i] - starts[i]
    finally:
        PyMem_Free(starts)
    codec = b._h.attributes & ATTR_CODEC_MASK
    if codec != 0:
        section = _codecs.compress(codec, section)
    size = BATCH_HEADER_SIZE + len(section)
    result = PyBytes_FromStringAndSize(NULL, size)
    o = <uint8_t *>PyBytes_AS_STRING(result)
    memcpy(o + BATCH_HEADER_SIZE, PyBytes_AS_STRING(section), size - BATCH_HEADER_SIZE)
    write_header(o, size, b._h.base_offset, b._h.leader_epoch, b._h.attributes,
                 b._h.last_offset_delta, b._h.base_timestamp, max_ts, b._h.producer_id,
                 b._h.producer_epoch, b._h.base_sequence, <int32_t>kept)
    return result


cdef extern from "_crc32c.h" nogil:
    uint32_t pylog_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)


def _crc32c_portable(data, unsigned int value=0):
    """CRC-32C by the table-driven fallback (what CPUs without SSE4.2 run); for tests."""
    cdef _BufferRef ref = acquire_buffer(data)
    return pylog_crc32c_sw(value, <const uint8_t *>ref.view.buf, <size_t>ref.view.len)
