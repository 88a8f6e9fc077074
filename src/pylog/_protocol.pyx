# cython: language_level=3, embedsignature=True
"""Kafka wire-protocol codec core: an interpreter over per-version message plans.

A :class:`Plan` describes one struct (a message body or a nested struct) at one version:
its fields in wire order (:class:`Op`), the fields the version lacks or sends as tags
(set to their defaults on decode), and the non-ignorable fields a version lacks (which
must hold their default on encode).  Plans are built once per (API, version, kind) by
:mod:`pylog.protocol._plan` and are immutable afterwards, so one plan may be used by
any number of threads at once; the functions here keep no other state.

Decoding (:func:`decode`) reads ``bytes`` or any contiguous buffer in place and is
bounded everywhere: every read
checks the bytes left first (varints byte by byte), lengths and counts are checked
against the bytes left before anything is sliced or allocated, and lists grow by append
as elements are actually decoded, so an untrusted count never sizes an allocation.
Values are stored straight into the ``__slots__`` of the generated message classes
(the slot offsets come from their member descriptors and the object type is checked
before every access).  ``records`` fields become ``memoryview`` slices of the input.
List and struct defaults of fields a version lacks (or did not send as tags) are left
unset and made on first access by ``Data.__getattr__``; the encoder treats an unset
slot of such a field as its default.

Encoding (:func:`encode`) writes into a growable buffer.  A ``records`` value of at least
``split_threshold`` bytes, or a ``FileRegion``, is not copied: the bytes so far become a
chunk of the returned segment list, the records object follows, and encoding continues.
"""

from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_Check
from cpython.list cimport PyList_Append, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.object cimport PyObject_RichCompareBool, Py_NE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import types as _types

# (MalformedMessageError, ProtocolError and FileRegion are imported at the end of this
# module: see there.)

# The uuid module (it imports platform: ~2 ms) is imported by the first uuid field
# decoded or encoded, not with the codec: pylog serve's start-up does without it (#17).
cdef object _uuid_mod = None


cdef object _uuid():
    global _uuid_mod
    if _uuid_mod is None:
        import uuid
        _uuid_mod = uuid
    return _uuid_mod

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    object PyType_GenericAlloc(PyTypeObject*, Py_ssize_t)
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyBytes_CheckExact(object)
    bint PyByteArray_CheckExact(object)
    bint PyList_CheckExact(object)
    bint PyTuple_CheckExact(object)
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)

cdef extern from "structmember.h":
    int T_OBJECT_EX

__all__ = ["Op", "Plan", "decode", "encode", "frame_buffer", "read_request_header", "slot_offset", "K_BOOL", "K_INT8", "K_INT16",
           "K_INT32", "K_INT64", "K_UINT16", "K_UINT32", "K_FLOAT64", "K_UUID", "K_STRING",
           "K_BYTES", "K_RECORDS", "K_STRUCT", "K_ARRAY", "D_CONST", "D_LIST", "D_STRUCT"]

# Field kinds.
cdef enum:
    _K_BOOL = 1
    _K_INT8 = 2
    _K_INT16 = 3
    _K_INT32 = 4
    _K_INT64 = 5
    _K_UINT16 = 6
    _K_UINT32 = 7
    _K_FLOAT64 = 8
    _K_UUID = 9
    _K_STRING = 10
    _K_BYTES = 11
    _K_RECORDS = 12
    _K_STRUCT = 13
    _K_ARRAY = 14

# How a field's default is made.
cdef enum:
    _D_CONST = 0    # an immutable value, shared
    _D_LIST = 1     # a new empty list
    _D_STRUCT = 2   # a new struct of defaults

K_BOOL, K_INT8, K_INT16, K_INT32, K_INT64 = _K_BOOL, _K_INT8, _K_INT16, _K_INT32, _K_INT64
K_UINT16, K_UINT32, K_FLOAT64, K_UUID = _K_UINT16, _K_UINT32, _K_FLOAT64, _K_UUID
K_STRING, K_BYTES, K_RECORDS, K_STRUCT, K_ARRAY = (_K_STRING, _K_BYTES, _K_RECORDS,
                                                   _K_STRUCT, _K_ARRAY)
D_CONST, D_LIST, D_STRUCT = _D_CONST, _D_LIST, _D_STRUCT

cdef Py_ssize_t _FIXED_SIZE[15]
_FIXED_SIZE[:] = [0, 1, 1, 2, 4, 8, 2, 4, 8, 16, 0, 0, 0, 0, 0]


def slot_offset(type cls, str name):
    """Byte offset of the ``__slots__`` member ``name`` in instances of ``cls``.

    Raises TypeError unless ``cls.__dict__[name]`` is an object member descriptor, so a
    plan can only ever write where CPython itself would store that attribute.
    """
    d = cls.__dict__.get(name)
    if type(d) is not _types.MemberDescriptorType:
        raise TypeError(f"{cls.__qualname__}.{name} is not a __slots__ member")
    cdef PyMemberDescrObject* md = <PyMemberDescrObject*><PyObject*>d
    if md.d_member.type != T_OBJECT_EX or md.d_member.offset <= 0:
        raise TypeError(f"{cls.__qualname__}.{name} is not an object slot")
    return md.d_member.offset


cdef class Op:
    """One field of a :class:`Plan` (or the element of an array field)."""

    cdef readonly int kind
    cdef readonly str name
    cdef readonly bint nullable
    cdef readonly Py_ssize_t offset
    cdef readonly Op elem
    cdef readonly Plan sub
    cdef readonly int tag
    cdef readonly int default_kind
    cdef readonly object default
    cdef readonly Py_ssize_t min_size

    def __init__(self, int kind, str name, *, bint nullable=False, Py_ssize_t offset=-1,
                 Op elem=None, Plan sub=None, int tag=-1, int default_kind=_D_CONST,
                 object default=None, Py_ssize_t min_size=1):
        if kind < _K_BOOL or kind > _K_ARRAY:
            raise ValueError(f"bad kind {kind}")
        if kind == _K_ARRAY and elem is None:
            raise ValueError(f"{name}: array without element")
        if kind == _K_STRUCT and sub is None:
            raise ValueError(f"{name}: struct without plan")
        if default_kind == _D_STRUCT and sub is None:
            raise ValueError(f"{name}: struct default without plan")
        self.kind = kind
        self.name = name
        self.nullable = nullable
        self.offset = offset
        self.elem = elem
        self.sub = sub
        self.tag = tag
        self.default_kind = default_kind
        self.default = default
        self.min_size = min_size if min_size > 0 else 1


cdef class Plan:
    """A struct at one version: how to read and write its fields."""

    cdef readonly object cls
    cdef PyTypeObject* cls_ptr
    cdef readonly bint flexible
    cdef readonly str name
    cdef readonly list wire
    cdef readonly list defaults
    cdef readonly list tagged
    cdef readonly list checks
    cdef readonly bint has_records
    cdef readonly object label
    cdef readonly object api_key
    cdef readonly object api_version
    cdef readonly object on_unsupported
    cdef readonly object on_encode_error
    cdef readonly Py_ssize_t split_threshold

    def __init__(self, type cls, str name, bint flexible, list wire, list defaults,
                 list tagged, list checks, *, bint has_records=False, label=None,
                 api_key=None, api_version=None, on_unsupported=None,
                 on_encode_error=None, Py_ssize_t split_threshold=4096):
        cdef Op op
        for lst in (wire, defaults, tagged, checks):
            for op in lst:
                if op.offset <= 0:
                    raise ValueError(f"{name}.{op.name}: no slot offset")
        for op in tagged:
            if op.tag < 0:
                raise ValueError(f"{name}.{op.name}: tagged field without a tag")
        self.cls = cls
        self.cls_ptr = <PyTypeObject*>cls
        self.name = name
        self.flexible = flexible
        self.wire = list(wire)
        self.defaults = list(defaults)
        self.tagged = list(tagged)
        self.checks = list(checks)
        self.has_records = has_records
        self.label = label if label is not None else name
        self.api_key = api_key
        self.api_version = api_version
        self.on_unsupported = on_unsupported
        self.on_encode_error = on_encode_error
        self.split_threshold = split_threshold


# --------------------------------------------------------------------------------------
# Slots
# --------------------------------------------------------------------------------------

cdef inline void _set_slot(object obj, Py_ssize_t off, object val):
    cdef PyObject** p = <PyObject**>((<char*><PyObject*>obj) + off)
    cdef PyObject* old = p[0]
    Py_INCREF(val)
    p[0] = <PyObject*>val
    Py_XDECREF(old)


cdef inline object _get_slot(object obj, Op op):
    cdef PyObject* p = (<PyObject**>((<char*><PyObject*>obj) + op.offset))[0]
    if p == NULL:
        raise AttributeError(f"field {op.name} is not set")
    return <object>p


cdef inline bint _slot_unset(object obj, Op op):
    """True for a list/struct default the decoder left to be made on first access."""
    return (<PyObject**>((<char*><PyObject*>obj) + op.offset))[0] == NULL


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------

ctypedef struct Reader:
    const uint8_t* p
    Py_ssize_t pos
    Py_ssize_t end
    PyObject* mv      # memoryview of the whole input (borrowed), for records


cdef inline int _need(Reader* r, Py_ssize_t n, Op op) except -1:
    if r.end - r.pos < n:
        raise MalformedMessageError(
            f"truncated: {op.name} needs {n} bytes at offset {r.pos}, "
            f"{r.end - r.pos} left")
    return 0


cdef long long _uvarint(Reader* r, Op op) except -1:
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef int i
    cdef uint8_t b
    for i in range(5):
        if r.pos >= r.end:
            raise MalformedMessageError(
                f"truncated: the message ends inside a varint ({op.name if op is not None else 'tagged fields'})")
        b = r.p[r.pos]
        r.pos += 1
        if i == 4 and b > 0x0F:
            raise MalformedMessageError(
                f"unsigned varint at offset {r.pos - 5} does not fit 32 bits")
        value |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            return <long long>value
        shift += 7
    raise MalformedMessageError(f"unsigned varint longer than 5 bytes at offset {r.pos - 5}")


cdef inline uint16_t _be16(const uint8_t* p) nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t* p) nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
            | <uint32_t>p[3])


cdef inline uint64_t _be64(const uint8_t* p) nogil:
    return (<uint64_t>_be32(p) << 32) | _be32(p + 4)


cdef long long _read_length(Reader* r, Op op, bint flex, bint short) except? -3:
    """A length or count prefix: -1 is null; other negatives are returned for the caller
    to reject.  Flexible versions use compact (unsigned varint N+1) lengths."""
    if flex:
        return _uvarint(r, op) - 1
    if short:
        _need(r, 2, op)
        r.pos += 2
        return <int16_t>_be16(r.p + r.pos - 2)
    _need(r, 4, op)
    r.pos += 4
    return <int32_t>_be32(r.p + r.pos - 4)


cdef object _null(Op op, long long n):
    if n == -1 and op.nullable:
        return None
    if n == -1:
        raise MalformedMessageError(f"{op.name} is null but the field is not nullable")
    raise MalformedMessageError(f"{op.name} has a negative length {n}")


cdef object _make_uuid(const uint8_t* p):
    cdef object raw = PyBytes_FromStringAndSize(<const char*>p, 16)
    return _uuid_from_bytes(raw)


def _uuid_from_bytes(raw):
    m = _uuid()
    u = object.__new__(m.UUID)
    object.__setattr__(u, "int", int.from_bytes(raw, "big"))
    object.__setattr__(u, "is_safe", m.SafeUUID.unknown)
    return u


cdef object _read(Op op, Reader* r, bint flex):
    cdef int k = op.kind
    cdef long long n
    cdef Py_ssize_t start
    cdef uint64_t u64
    cdef double d
    cdef object lst, item
    cdef Op elem
    if k <= _K_UUID:
        _need(r, _FIXED_SIZE[k], op)
        start = r.pos
        r.pos += _FIXED_SIZE[k]
        if k == _K_INT32:
            return <int32_t>_be32(r.p + start)
        if k == _K_INT16:
            return <int16_t>_be16(r.p + start)
        if k == _K_INT64:
            return <int64_t>_be64(r.p + start)
        if k == _K_INT8:
            return <int8_t>r.p[start]
        if k == _K_BOOL:
            return r.p[start] != 0
        if k == _K_UINT16:
            return _be16(r.p + start)
        if k == _K_UINT32:
            return _be32(r.p + start)
        if k == _K_FLOAT64:
            u64 = _be64(r.p + start)
            memcpy(&d, &u64, 8)
            return d
        return _make_uuid(r.p + start)
    if k == _K_STRUCT:
        if op.nullable:
            _need(r, 1, op)
            r.pos += 1
            if <int8_t>r.p[r.pos - 1] < 0:
                return None
        return _read_struct(op.sub, r)
    if k == _K_ARRAY:
        n = _read_length(r, op, flex, False)
        if n < 0:
            return _null(op, n)
        elem = op.elem
        if n > (r.end - r.pos) // elem.min_size:
            raise MalformedMessageError(
                f"{op.name}: {n} elements cannot fit in the {r.end - r.pos} bytes left")
        lst = []
        if elem.kind == _K_STRUCT and not elem.nullable:
            for _ in range(n):
                PyList_Append(lst, _read_struct(elem.sub, r))
        else:
            for _ in range(n):
                PyList_Append(lst, _read(elem, r, flex))
        return lst
    # string, bytes, records
    n = _read_length(r, op, flex, k == _K_STRING)
    if n < 0:
        return _null(op, n)
    if n > r.end - r.pos:
        raise MalformedMessageError(
            f"{op.name}: length {n} exceeds the {r.end - r.pos} bytes left")
    start = r.pos
    r.pos += n
    if k == _K_STRING:
        return PyUnicode_DecodeUTF8(<const char*>(r.p + start), n, NULL)
    if k == _K_BYTES:
        return PyBytes_FromStringAndSize(<const char*>(r.p + start), n)
    return (<object>r.mv)[start:start + n]


cdef object _read_struct(Plan plan, Reader* r):
    cdef object obj = PyType_GenericAlloc(plan.cls_ptr, 0)
    cdef Op op
    cdef bint flex = plan.flexible
    for op in plan.wire:
        _set_slot(obj, op.offset, _read(op, r, flex))
    for op in plan.defaults:
        # Immutable defaults are shared; list and struct defaults are left unset and made
        # on first access (Data.__getattr__), which saves allocations for every field a
        # version lacks or did not send as a tag.
        if op.default_kind == _D_CONST:
            _set_slot(obj, op.offset, op.default)
    if flex:
        if r.pos < r.end and r.p[r.pos] == 0:  # the usual case: no tagged fields
            r.pos += 1
        else:
            _read_tags(plan, obj, r)
    return obj


cdef int _read_tags(Plan plan, object obj, Reader* r) except -1:
    cdef long long count = _uvarint(r, None)
    cdef long long tag, size
    cdef Py_ssize_t end
    cdef Reader sub
    cdef Op op, found
    if count > (r.end - r.pos) // 2:
        raise MalformedMessageError(
            f"{plan.name}: {count} tagged fields cannot fit in the {r.end - r.pos} bytes left")
    for _ in range(count):
        tag = _uvarint(r, None)
        size = _uvarint(r, None)
        if size > r.end - r.pos:
            raise MalformedMessageError(
                f"{plan.name}: tagged field {tag} of {size} bytes runs past the end")
        end = r.pos + size
        found = None
        for op in plan.tagged:
            if op.tag == tag:
                found = op
                break
        if found is not None:
            sub = r[0]
            sub.end = end
            _set_slot(obj, found.offset, _read(found, &sub, True))
            if sub.pos != end:
                raise MalformedMessageError(
                    f"{plan.name}: tagged field {found.name} leaves {end - sub.pos} of its "
                    f"{size} bytes unread")
        r.pos = end
    return 0


def decode(Plan plan, object buf, Py_ssize_t pos=0, Py_ssize_t max_trailing=0):
    """Decode a struct described by ``plan`` from ``buf[pos:]``.

    ``buf`` is ``bytes`` or any C-contiguous bytes-like object (``bytearray``,
    ``memoryview``, ``mmap``); it is read in place, and ``records`` fields become
    ``memoryview`` slices of it, so the caller must not change a mutable buffer while
    decoded records are in use.

    By default the message must fill ``buf[pos:]`` exactly (a message never carries
    padding).  ``max_trailing`` > 0 accepts up to that many bytes after the message,
    unread; -1 accepts any number of them (all of them inside ``buf``: nothing past its
    end is ever read).

    Raises MalformedMessageError (with the plan's label, API key and version) for any
    input that does not fit the plan.
    """
    cdef Reader r
    cdef Py_buffer view
    cdef bint held = False
    cdef object mv = None
    if PyBytes_CheckExact(buf):
        r.p = <const uint8_t*>PyBytes_AS_STRING(buf)
        r.end = PyBytes_GET_SIZE(buf)
    else:
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        held = True
        r.p = <const uint8_t*>view.buf
        r.end = view.len
    try:
        if pos < 0 or pos > r.end:
            raise ValueError(f"position {pos} outside the {r.end}-byte buffer")
        r.pos = pos
        if plan.has_records:
            mv = memoryview(buf)
            if held and (mv.ndim != 1 or mv.itemsize != 1 or mv.format != "B"):
                mv = mv.cast("B")
        r.mv = <PyObject*>mv
        try:
            obj = _read_struct(plan, &r)
            if r.pos != r.end and (max_trailing == 0 or (0 < max_trailing < r.end - r.pos)):
                raise MalformedMessageError(f"{r.end - r.pos} bytes left after the message")
        except MalformedMessageError as exc:
            raise MalformedMessageError(f"{plan.label}: {exc}", api_key=plan.api_key,
                                        api_version=plan.api_version) from None
        except UnicodeDecodeError as exc:
            raise MalformedMessageError(
                f"{plan.label}: a string is not valid UTF-8 ({exc.reason})",
                api_key=plan.api_key, api_version=plan.api_version) from None
        return obj
    finally:
        if held:
            PyBuffer_Release(&view)


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------

ctypedef struct Writer:
    char* data
    Py_ssize_t len
    Py_ssize_t cap
    Py_ssize_t flushed      # bytes already moved to segments


cdef int _grow(Writer* w, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap = w.cap * 2 if w.cap else 256
    cdef char* data
    if n > (<Py_ssize_t>0x7FFFFFFFFFFF) - w.len:
        raise OverflowError("encoded message too large")
    while cap < w.len + n:
        cap *= 2
    data = <char*>PyMem_Realloc(w.data, cap)
    if data == NULL:
        raise MemoryError()
    w.data = data
    w.cap = cap
    return 0


cdef inline int _reserve(Writer* w, Py_ssize_t n) except -1:
    if w.cap - w.len < n:
        _grow(w, n)
    return 0


cdef inline int _put(Writer* w, const void* src, Py_ssize_t n) except -1:
    _reserve(w, n)
    memcpy(w.data + w.len, src, n)
    w.len += n
    return 0


cdef inline int _put_u8(Writer* w, uint8_t v) except -1:
    _reserve(w, 1)
    w.data[w.len] = <char>v
    w.len += 1
    return 0


cdef inline int _put_be16(Writer* w, uint16_t v) except -1:
    _reserve(w, 2)
    w.data[w.len] = <char>(v >> 8)
    w.data[w.len + 1] = <char>v
    w.len += 2
    return 0


cdef inline int _put_be32(Writer* w, uint32_t v) except -1:
    _reserve(w, 4)
    cdef char* p = w.data + w.len
    p[0] = <char>(v >> 24)
    p[1] = <char>(v >> 16)
    p[2] = <char>(v >> 8)
    p[3] = <char>v
    w.len += 4
    return 0


cdef inline int _put_be64(Writer* w, uint64_t v) except -1:
    _put_be32(w, <uint32_t>(v >> 32))
    _put_be32(w, <uint32_t>v)
    return 0


cdef int _put_uvarint(Writer* w, uint64_t v) except -1:
    if v > 0xFFFFFFFF:
        raise OverflowError(f"{v} does not fit an unsigned varint (32 bits)")
    _reserve(w, 5)
    while v >= 0x80:
        w.data[w.len] = <char>((v & 0x7F) | 0x80)
        w.len += 1
        v >>= 7
    w.data[w.len] = <char>v
    w.len += 1
    return 0


cdef int _put_length(Writer* w, long long n, bint flex, bint short) except -1:
    """Write a length/count prefix (-1 = null)."""
    if flex:
        return _put_uvarint(w, <uint64_t>(n + 1))
    if short:
        if n > 0x7FFF:
            raise OverflowError(f"length {n} does not fit the int16 prefix (max 32767)")
        return _put_be16(w, <uint16_t><int16_t>n)
    if n > 0x7FFFFFFF:
        raise OverflowError(f"length {n} does not fit the int32 prefix")
    return _put_be32(w, <uint32_t><int32_t>n)


cdef int _flush(Writer* w, list segs) except -1:
    if w.len:
        segs.append(PyByteArray_FromStringAndSize(w.data, w.len))
        w.flushed += w.len
        w.len = 0
    return 0


cdef long long _int_in(object v, long long lo, long long hi, Op op) except? -1:
    cdef long long x = v
    if x < lo or x > hi:
        raise OverflowError(f"{op.name}: {x} is outside [{lo}, {hi}]")
    return x


cdef int _write(Op op, object v, Writer* w, list segs, bint flex, Py_ssize_t split) except -1:
    cdef int k = op.kind
    cdef long long x
    cdef unsigned long long ux
    cdef double d
    cdef uint64_t u64
    cdef Py_ssize_t n, i
    cdef const char* s
    cdef Py_buffer view
    cdef Op elem
    if k <= _K_UUID:
        if k == _K_INT32:
            x = _int_in(v, -2147483648, 2147483647, op)
            return _put_be32(w, <uint32_t><int32_t>x)
        if k == _K_INT16:
            x = _int_in(v, -32768, 32767, op)
            return _put_be16(w, <uint16_t><int16_t>x)
        if k == _K_INT64:
            x = v
            return _put_be64(w, <uint64_t><int64_t>x)
        if k == _K_INT8:
            x = _int_in(v, -128, 127, op)
            return _put_u8(w, <uint8_t><int8_t>x)
        if k == _K_BOOL:
            if v is True or v is False or type(v) is int:
                return _put_u8(w, 1 if v else 0)
            raise TypeError(f"{op.name}: expected a bool, got {type(v).__name__}")
        if k == _K_UINT16:
            x = _int_in(v, 0, 65535, op)
            return _put_be16(w, <uint16_t>x)
        if k == _K_UINT32:
            x = _int_in(v, 0, 4294967295, op)
            return _put_be32(w, <uint32_t>x)
        if k == _K_FLOAT64:
            d = v
            memcpy(&u64, &d, 8)
            return _put_be64(w, u64)
        if not isinstance(v, _uuid().UUID):
            raise TypeError(f"{op.name}: expected a uuid.UUID, got {type(v).__name__}")
        raw = v.bytes
        return _put(w, PyBytes_AS_STRING(raw), 16)
    if v is None:
        if not op.nullable:
            raise TypeError(f"{op.name}: None, but the field is not nullable in this version")
        if k == _K_STRUCT:
            return _put_u8(w, 0xFF)
        return _put_length(w, -1, flex, k == _K_STRING)
    if k == _K_STRUCT:
        if op.nullable:
            _put_u8(w, 1)
        return _write_struct(op.sub, v, w, segs, split)
    if k == _K_ARRAY:
        elem = op.elem
        if PyList_CheckExact(v):
            n = PyList_GET_SIZE(v)
            _put_length(w, n, flex, False)
            for i in range(n):
                # The list may be mutated by __eq__ of an element; re-check the size.
                if i >= PyList_GET_SIZE(v):
                    raise ValueError(f"{op.name}: the list changed size while being encoded")
                _write(elem, <object>PyList_GET_ITEM(v, i), w, segs, flex, split)
            return 0
        if PyTuple_CheckExact(v):
            n = PyTuple_GET_SIZE(v)
            _put_length(w, n, flex, False)
            for i in range(n):
                _write(elem, <object>PyTuple_GET_ITEM(v, i), w, segs, flex, split)
            return 0
        raise TypeError(f"{op.name}: expected a list, got {type(v).__name__}")
    if k == _K_STRING:
        if not PyUnicode_Check(v):
            raise TypeError(f"{op.name}: expected a str, got {type(v).__name__}")
        s = PyUnicode_AsUTF8AndSize(v, &n)
        _put_length(w, n, flex, True)
        return _put(w, s, n)
    if k == _K_RECORDS and type(v) is FileRegion:
        if segs is None:
            raise TypeError(f"{op.name}: a FileRegion cannot be sent inside a tagged field")
        n = v.length
        _put_length(w, n, flex, False)
        _flush(w, segs)
        segs.append(v)
        w.flushed += n
        return 0
    if PyBytes_CheckExact(v):
        n = PyBytes_GET_SIZE(v)
        _put_length(w, n, flex, False)
        if k == _K_RECORDS and n >= split and segs is not None:
            _flush(w, segs)
            segs.append(v)
            w.flushed += n
            return 0
        return _put(w, PyBytes_AS_STRING(v), n)
    PyObject_GetBuffer(v, &view, PyBUF_SIMPLE)
    try:
        n = view.len
        _put_length(w, n, flex, False)
        if k == _K_RECORDS and n >= split and segs is not None:
            _flush(w, segs)
            segs.append(v if type(v) is bytearray else memoryview(v).cast("B"))
            w.flushed += n
            return 0
        _put(w, view.buf, n)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef bint _is_default(Op op, object v) except -1:
    if op.default_kind == _D_CONST:
        if op.default is None:
            return v is None
        return not PyObject_RichCompareBool(v, op.default, Py_NE)
    if op.default_kind == _D_LIST:
        return v is not None and len(v) == 0
    return _struct_is_default(op.sub, v)


cdef bint _struct_is_default(Plan plan, object obj) except -1:
    """True when every field of ``obj`` holds its default (compared in C, field by field,
    instead of through the Python-level ``__eq__``)."""
    cdef Op op
    if <PyTypeObject*>Py_TYPE(obj) != plan.cls_ptr:
        return False
    for op in plan.wire:
        if not _slot_unset(obj, op) and not _is_default(op, _get_slot(obj, op)):
            return False
    for op in plan.defaults:
        if not _slot_unset(obj, op) and not _is_default(op, _get_slot(obj, op)):
            return False
    return True


cdef int _write_struct(Plan plan, object obj, Writer* w, list segs, Py_ssize_t split) except -1:
    cdef Op op
    cdef bint flex = plan.flexible
    cdef list present
    cdef Writer tmp
    if <PyTypeObject*>Py_TYPE(obj) != plan.cls_ptr:
        raise TypeError(f"expected a {plan.cls.__qualname__}, got {type(obj).__name__}")
    for op in plan.checks:
        if not _slot_unset(obj, op) and not _is_default(op, _get_slot(obj, op)):
            plan.on_unsupported(obj, op.name)
    for op in plan.wire:
        _write(op, _get_slot(obj, op), w, segs, flex, split)
    if not flex:
        return 0
    if not plan.tagged:
        return _put_u8(w, 0)
    present = []
    for op in plan.tagged:
        if _slot_unset(obj, op):
            continue
        v = _get_slot(obj, op)
        if not _is_default(op, v):
            present.append((op, v))
    _put_uvarint(w, len(present))
    for op, v in present:
        tmp.data = NULL
        tmp.len = tmp.cap = tmp.flushed = 0
        try:
            _write(op, v, &tmp, None, True, split)
            _put_uvarint(w, op.tag)
            _put_uvarint(w, tmp.len)
            _put(w, tmp.data, tmp.len)
        finally:
            PyMem_Free(tmp.data)
    return 0


def encode(Plan plan, object obj, bytes prefix=b"", bint frame=False):
    """Encode ``obj`` (an instance of ``plan.cls``) and return its segments.

    The output starts with ``prefix`` (a header, say); with ``frame=True`` it is preceded
    by an int32 size of everything after it.  Segments are ``bytearray`` chunks and the
    records objects / FileRegions that were not copied; a message without large records
    comes back as a single chunk.
    """
    cdef Writer w
    cdef list segs = []
    cdef Py_ssize_t total
    cdef char* p
    w.data = NULL
    w.len = w.cap = w.flushed = 0
    try:
        if frame:
            _reserve(&w, 4)
            w.len = 4
        _put(&w, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))
        try:
            _write_struct(plan, obj, &w, segs, plan.split_threshold)
        except ProtocolError:
            raise
        except (TypeError, OverflowError, ValueError, AttributeError, UnicodeEncodeError) as exc:
            if plan.on_encode_error is None:
                raise
            raise plan.on_encode_error(obj, exc) from None
        if w.len or not segs:
            segs.append(PyByteArray_FromStringAndSize(w.data, w.len))
        if frame:
            total = w.flushed + w.len - 4
            if total > 0x7FFFFFFF:
                raise plan.on_encode_error(obj, OverflowError(
                    f"the encoded message ({total} bytes) does not fit a frame"))
            p = PyByteArray_AS_STRING(segs[0])
            p[0] = <char>(total >> 24)
            p[1] = <char>(total >> 16)
            p[2] = <char>(total >> 8)
            p[3] = <char>total
    finally:
        PyMem_Free(w.data)
    return segs


def frame_buffer(Py_ssize_t size):
    """A new ``bytearray`` of ``size`` bytes whose contents are *not* initialised, to
    receive a frame into (``socket.recv_into``) without paying for zero-filling it first.
    Large buffers come from fresh anonymous memory, which the OS commits page by page as
    bytes are written, so memory in use grows with the bytes received, not with the size
    asked for.  Read only the bytes that were written."""
    if size < 0:
        raise ValueError(f"negative buffer size {size}")
    return PyByteArray_FromStringAndSize(NULL, size)


# --------------------------------------------------------------------------------------
# Request header
# --------------------------------------------------------------------------------------

def read_request_header(object frame, dict flexible_from):
    """Decode a request header (v1, or v2 when the API version is flexible).

    ``frame`` is ``bytes`` or any C-contiguous bytes-like object, read in place (nothing
    decoded refers to it afterwards).  ``flexible_from`` maps an API key to its first
    flexible version; unknown keys are read as header v1 (whether tags follow cannot be
    known).  Returns (api_key, api_version, correlation_id, client_id, header_version,
    body_offset).  Raises MalformedMessageError for a truncated or malformed header.
    """
    cdef Py_buffer view
    if PyBytes_CheckExact(frame):
        return _read_request_header(<const uint8_t*>PyBytes_AS_STRING(frame),
                                    PyBytes_GET_SIZE(frame), flexible_from)
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        return _read_request_header(<const uint8_t*>view.buf, view.len, flexible_from)
    finally:
        PyBuffer_Release(&view)


cdef tuple _read_request_header(const uint8_t* data, Py_ssize_t size, dict flexible_from):
    cdef Reader r
    cdef int16_t api_key, api_version
    cdef int32_t correlation_id
    cdef long long n
    cdef int header_version = 1
    r.p = data
    r.end = size
    r.pos = 0
    r.mv = NULL
    if r.end < 10:
        raise MalformedMessageError(
            f"request header needs at least 10 bytes (api key, version, correlation id, "
            f"client id length), got {r.end}")
    api_key = <int16_t>_be16(r.p)
    api_version = <int16_t>_be16(r.p + 2)
    correlation_id = <int32_t>_be32(r.p + 4)
    n = <int16_t>_be16(r.p + 8)
    r.pos = 10
    if n == -1:
        client_id = None
    elif n < 0:
        raise MalformedMessageError(f"request header: client_id length {n} is negative")
    elif n > r.end - r.pos:
        raise MalformedMessageError(
            f"request header: client_id length {n} exceeds the {r.end - r.pos} bytes left")
    else:
        try:
            client_id = PyUnicode_DecodeUTF8(<const char*>(r.p + r.pos), n, NULL)
        except UnicodeDecodeError as exc:
            raise MalformedMessageError(
                f"request header: client_id is not valid UTF-8 ({exc.reason})") from None
        r.pos += n
    first_flexible = flexible_from.get(api_key)
    if first_flexible is not None and api_version >= <int>first_flexible:
        header_version = 2
        if r.pos < r.end and r.p[r.pos] == 0:
            r.pos += 1
        else:
            _skip_all_tags(&r)
    return api_key, api_version, correlation_id, client_id, header_version, r.pos


cdef int _skip_all_tags(Reader* r) except -1:
    cdef long long count = _uvarint(r, None)
    cdef long long size
    if count > (r.end - r.pos) // 2:
        raise MalformedMessageError(
            f"request header: {count} tagged fields cannot fit in the {r.end - r.pos} bytes left")
    for _ in range(count):
        _uvarint(r, None)
        size = _uvarint(r, None)
        if size > r.end - r.pos:
            raise MalformedMessageError(
                f"request header: a tagged field of {size} bytes runs past the end")
        r.pos += size
    return 0


# Last, once every name above exists: importing pylog.protocol._errors runs the
# pylog.protocol package, whose codec reads this module's kinds and functions at its
# import.  At the top, a process whose first import of pylog was this module failed on
# the half-made module (a circular import); the names below are only looked up when a
# function runs.
from pylog.protocol._errors import MalformedMessageError, ProtocolError   # noqa: E402
from pylog.protocol.segments import FileRegion   # noqa: E402
