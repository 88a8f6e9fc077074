"""Bounded reading and writing of Kafka's primitive types (private to pylog.broker).

Covers what the consumer protocol and the ``__consumer_offsets`` records use: big-endian
int16/int32/int64, ``string`` (int16 length + UTF-8, -1 = null), ``bytes`` (int32 length,
-1 = null), arrays (int32 count), and the flexible-version forms (unsigned-varint
length + 1, tagged-field sections).

Every read checks that its bytes are there first, and array counts are checked against the
bytes left before anything is allocated, so a hostile length cannot make the reader
allocate or read past the end.  Failures raise the error class the caller chose (its
message says what and where), never IndexError or struct.error.
"""

from __future__ import annotations

import operator
import struct
from typing import Iterable

from pylog.errors import InvalidRequestError, PylogError

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")

INT16_MAX = 2**15 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Reader:
    """Cursor over a bytes-like buffer; ``what`` names the structure in error messages."""

    __slots__ = ("_buf", "_pos", "_error", "_what")

    def __init__(self, data, error: type[PylogError], what: str) -> None:
        try:
            self._buf = memoryview(data).cast("B")
        except TypeError:
            raise error(f"{what}: expected bytes, got {type(data).__name__}") from None
        self._pos = 0
        self._error = error
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def fail(self, reason: str) -> PylogError:
        return self._error(f"{self._what}: {reason} (at byte {self._pos} of {len(self._buf)})")

    def _take(self, n: int) -> memoryview:
        if n < 0 or n > len(self._buf) - self._pos:
            raise self.fail(f"truncated: {n} more bytes needed, {self.remaining} left")
        start = self._pos
        self._pos += n
        return self._buf[start:self._pos]

    def raw(self, n: int) -> bytes:
        """The next ``n`` bytes as they are (a tagged field's payload)."""
        return bytes(self._take(n))

    def int8(self) -> int:
        return int.from_bytes(self._take(1), "big", signed=True)

    def int16(self) -> int:
        return _I16.unpack(self._take(2))[0]

    def int32(self) -> int:
        return _I32.unpack(self._take(4))[0]

    def int64(self) -> int:
        return _I64.unpack(self._take(8))[0]

    def uvarint(self) -> int:
        value = shift = 0
        for _ in range(5):
            b = self._take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise self.fail("unsigned varint longer than 5 bytes")

    def _length(self, compact: bool, wide: bool) -> int:
        if compact:
            return self.uvarint() - 1
        return self.int32() if wide else self.int16()

    def string(self, *, nullable: bool = False, compact: bool = False) -> str | None:
        n = self._length(compact, wide=False)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise self.fail(f"bad string length {n}")
        raw = self._take(n)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise self.fail("string is not valid UTF-8") from None

    def bytes_(self, *, nullable: bool = False, compact: bool = False) -> bytes | None:
        n = self._length(compact, wide=True)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise self.fail(f"bad bytes length {n}")
        return bytes(self._take(n))

    def array_length(self, min_element_size: int, *, compact: bool = False,
                     nullable: bool = False) -> int:
        """Element count of an array; -1 for a null (nullable) array."""
        n = self.uvarint() - 1 if compact else self.int32()
        if n < 0:
            if n == -1 and nullable:
                return -1
            raise self.fail(f"bad array length {n}")
        if n * min_element_size > self.remaining:
            raise self.fail(f"array of {n} elements cannot fit in the {self.remaining} bytes left")
        return n

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()                    # tag
            self._take(self.uvarint())        # size, data

    def skip_rest(self) -> None:
        self._pos = len(self._buf)


class Writer:
    """Appends Kafka primitives to a bytearray; bad values raise ``error`` (default
    InvalidRequestError) naming the field."""

    __slots__ = ("_out", "_error")

    def __init__(self, error: type[PylogError] = InvalidRequestError) -> None:
        self._out = bytearray()
        self._error = error

    def getvalue(self) -> bytes:
        return bytes(self._out)

    def _int(self, packer: struct.Struct, lo: int, hi: int, value, field: str) -> None:
        if isinstance(value, bool):
            raise self._error(f"{field} must be an int, not bool")
        try:
            value = operator.index(value)
        except TypeError:
            raise self._error(f"{field} must be an int, not {type(value).__name__}") from None
        if not lo <= value <= hi:
            raise self._error(f"{field}={value} is outside [{lo}, {hi}]")
        self._out += packer.pack(value)

    def int8(self, value: int, field: str) -> None:
        self._int(_I8, -128, 127, value, field)

    def int16(self, value: int, field: str) -> None:
        self._int(_I16, -(2**15), INT16_MAX, value, field)

    def int32(self, value: int, field: str) -> None:
        self._int(_I32, INT32_MIN, INT32_MAX, value, field)

    def int64(self, value: int, field: str) -> None:
        self._int(_I64, INT64_MIN, INT64_MAX, value, field)

    def uvarint(self, value: int) -> None:
        while value > 0x7F:
            self._out.append((value & 0x7F) | 0x80)
            value >>= 7
        self._out.append(value)

    def _length(self, n: int, compact: bool, wide: bool) -> None:
        if compact:
            self.uvarint(n + 1)
        elif wide:
            self._out += _I32.pack(n)
        else:
            self._out += _I16.pack(n)

    def string(self, value: str | None, field: str, *, nullable: bool = False,
               compact: bool = False) -> None:
        if value is None:
            if not nullable:
                raise self._error(f"{field} must be a string, not None")
            self._length(-1, compact, wide=False)
            return
        if not isinstance(value, str):
            raise self._error(f"{field} must be a str, not {type(value).__name__}")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise self._error(f"{field} cannot be encoded as UTF-8") from None
        if len(raw) > INT16_MAX:
            raise self._error(f"{field} is {len(raw)} bytes of UTF-8; Kafka strings hold at most {INT16_MAX}")
        self._length(len(raw), compact, wide=False)
        self._out += raw

    def bytes_(self, value, field: str, *, nullable: bool = False, compact: bool = False) -> None:
        if value is None:
            if not nullable:
                raise self._error(f"{field} must be bytes, not None")
            self._length(-1, compact, wide=True)
            return
        try:
            raw = memoryview(value).cast("B")
        except TypeError:
            raise self._error(f"{field} must be bytes-like, not {type(value).__name__}") from None
        if len(raw) > INT32_MAX:
            raise self._error(f"{field} is larger than {INT32_MAX} bytes")
        self._length(len(raw), compact, wide=True)
        self._out += raw

    def array_length(self, n: int, *, compact: bool = False) -> None:
        if n > INT32_MAX:
            raise self._error(f"array of {n} elements is too long")
        if compact:
            self.uvarint(n + 1)
        else:
            self._out += _I32.pack(n)

    def int32_array(self, values: Iterable[int], field: str, *, compact: bool = False) -> None:
        values = list(values)
        self.array_length(len(values), compact=compact)
        for v in values:
            self.int32(v, field)

    def raw(self, data: bytes) -> None:
        """Bytes already encoded (a tagged field's payload)."""
        self._out += data

    def empty_tagged_fields(self) -> None:
        self._out.append(0)
