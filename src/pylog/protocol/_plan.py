"""Turn a message declaration at one version into a plan for the Cython codec.

:func:`build_plan` resolves, for one (message, version): which fields are on the wire and
in what order, which are tagged (and their tags), which the version lacks (decoded as
their defaults; on encode, non-ignorable ones must hold their default), nullability,
compact encoding (flexible versions), the smallest wire size of each array element (so
the decoder can reject counts that cannot fit), and the ``__slots__`` offset of every
field in the generated classes.  Plans are immutable; see :mod:`pylog._protocol` for the
interpreter that runs them.

Also here: the slow-path diagnosis that names the field path when encoding fails, and the
small varint helpers the hand-written header code uses.
"""

from __future__ import annotations

from typing import Any

from pylog import _protocol as _c
from pylog.protocol._errors import MalformedMessageError, MessageEncodeError
from pylog.protocol.messages import class_for
from pylog.protocol.schema import Field, Message, int_range
from pylog.protocol.segments import FileRegion

__all__ = ["build_plan", "find_encode_problem", "read_uvarint", "write_uvarint",
           "skip_tags", "SPLIT_THRESHOLD"]

#: Records values at least this large are passed through as their own segment instead of
#: being copied into the encoded bytes (smaller ones are cheaper to copy than to send as
#: a separate iovec entry).
SPLIT_THRESHOLD = 4096

_KINDS = {
    "bool": _c.K_BOOL, "int8": _c.K_INT8, "int16": _c.K_INT16, "int32": _c.K_INT32,
    "int64": _c.K_INT64, "uint16": _c.K_UINT16, "uint32": _c.K_UINT32,
    "float64": _c.K_FLOAT64, "uuid": _c.K_UUID, "string": _c.K_STRING,
    "bytes": _c.K_BYTES, "records": _c.K_RECORDS,
}
_FIXED_SIZE = {"bool": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2,
               "uint32": 4, "float64": 8, "uuid": 16}


# --------------------------------------------------------------------------------------
# Varints (headers are decoded in Python)
# --------------------------------------------------------------------------------------


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read an unsigned LEB128 varint of at most 5 bytes (a uint32) at ``pos``.

    Returns (value, new position).  Raises MalformedMessageError when the buffer ends
    inside the varint or it does not fit 32 bits.
    """
    end = len(buf)
    value = 0
    for i in range(5):
        if pos >= end:
            raise MalformedMessageError(f"the message ends inside an unsigned varint at byte {pos}")
        b = buf[pos]
        pos += 1
        if i == 4 and b > 0x0F:
            raise MalformedMessageError("unsigned varint does not fit 32 bits")
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return value, pos
    raise MalformedMessageError(f"unsigned varint longer than 5 bytes before byte {pos}")


def write_uvarint(n: int) -> bytes:
    """Unsigned LEB128 encoding of ``0 <= n < 2**32``."""
    if not 0 <= n <= 0xFFFFFFFF:
        raise OverflowError(f"an unsigned varint holds 0..2**32-1, not {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def skip_tags(buf: bytes, pos: int, count: int) -> int:
    """Skip ``count`` tagged fields starting at ``pos`` (KIP-482: unknown tags are
    ignored); return the position after them."""
    end = len(buf)
    if count > (end - pos) // 2:
        raise MalformedMessageError(f"{count} tagged fields cannot fit in {end - pos} bytes")
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        if size > end - pos:
            raise MalformedMessageError(f"a tagged field of {size} bytes runs past the end")
        pos += size
    return pos


# --------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------


def _split(fields, version: int, flex: bool):
    """(regular fields in wire order, tagged fields by tag, fields absent at version)."""
    regular, tagged, absent = [], [], []
    for f in fields:
        if version not in f.versions:
            absent.append(f)
        elif version in f.tagged:
            if not flex:
                raise ValueError(f"field {f.name} is tagged in non-flexible version {version}")
            tagged.append(f)
        else:
            regular.append(f)
    tagged.sort(key=lambda f: f.tag)
    tags = [f.tag for f in tagged]
    if len(set(tags)) != len(tags):
        raise ValueError(f"duplicate tags {tags} at version {version}")
    return regular, tagged, absent


def _min_size(f: Field, version: int, flex: bool, element: bool) -> int:
    """Fewest bytes one value of ``f`` (one element when ``element``) takes on the wire."""
    if f.is_array and not element:
        return 1 if flex else 4
    t = f.element
    if t in _FIXED_SIZE:
        return _FIXED_SIZE[t]
    if f.is_struct:
        if not element and version in f.nullable:
            return 1
        regular, _, _ = _split(f.fields, version, flex)
        return sum(_min_size(x, version, flex, False) for x in regular) + (1 if flex else 0)
    if flex:
        return 1
    return 2 if t == "string" else 4


class _Builder:
    def __init__(self, version: int, flex: bool, callbacks: dict) -> None:
        self.version = version
        self.flex = flex
        self.has_records = False
        self.callbacks = callbacks  # error reporting, shared by every nested plan

    def plan(self, fields, cls, name: str, **top) -> Any:
        v, flex = self.version, self.flex
        regular, tagged, absent = _split(fields, v, flex)
        ops = {f.name: self.op(f, cls) for f in fields}
        return _c.Plan(
            cls, name, flex,
            [ops[f.name] for f in regular],
            [ops[f.name] for f in absent + tagged],
            [ops[f.name] for f in tagged],
            [ops[f.name] for f in absent if not f.ignorable],
            has_records=self.has_records, split_threshold=SPLIT_THRESHOLD,
            **self.callbacks, **top)

    def op(self, f: Field, cls) -> Any:
        v = self.version
        present = v in f.versions
        if present and f.element == "records":
            self.has_records = True
        sub = None
        if f.is_struct:
            sub = self.plan(f.fields, f.cls, f"{cls.__qualname__}.{f.struct_name}")
        elem = None
        if f.is_array:
            if f.is_struct:
                elem = _c.Op(_c.K_STRUCT, f.name, sub=sub,
                             min_size=_min_size(f, v, self.flex, True))
            else:
                elem = _c.Op(_KINDS[f.element], f.name,
                             min_size=_min_size(f, v, self.flex, True))
        kind = _c.K_ARRAY if f.is_array else (_c.K_STRUCT if f.is_struct else _KINDS[f.type])
        default = f.default
        if f.is_array and default is not None:
            default_kind, default_value = _c.D_LIST, None
        elif f.is_struct and default is not None:
            default_kind, default_value = _c.D_STRUCT, f.cls()
        else:
            default_kind, default_value = _c.D_CONST, f.default_value()
        return _c.Op(kind, f.name, nullable=present and v in f.nullable,
                     offset=_c.slot_offset(cls, f.name), elem=elem,
                     sub=sub if not f.is_array else None, tag=f.tag if f.tag is not None else -1,
                     default_kind=default_kind, default=default_value)


def build_plan(message: Message, version: int) -> Any:
    """The codec plan of ``message`` at ``version`` (one of its valid versions)."""
    if version not in message.valid:
        raise ValueError(f"{message.name} v{version} is outside {message.valid.text}")
    cls = class_for(message)
    b = _Builder(version, message.is_flexible(version), {
        "on_unsupported": _unsupported_factory(message, version),
        "on_encode_error": _encode_failed_factory(message, version)})
    # Records can only sit below the top level; walk once to learn whether any are present
    # before the top plan records the flag.
    b.has_records = _has_records(message.fields, version)
    return b.plan(
        message.fields, cls, message.name,
        label=f"{message.name} v{version}", api_key=message.api_key, api_version=version)


def _has_records(fields, version: int) -> bool:
    for f in fields:
        if version not in f.versions:
            continue
        if f.element == "records" or (f.is_struct and _has_records(f.fields, version)):
            return True
    return False


def _unsupported_factory(message: Message, version: int):
    def unsupported(obj, field_name):
        f = next(x for x in obj._decl.fields if x.name == field_name)
        raise MessageEncodeError(
            f"{message.name} v{version} cannot carry {type(obj).__qualname__}.{field_name}="
            f"{getattr(obj, field_name)!r}: the field exists only in versions "
            f"{f.versions.text} and is not ignorable; leave it at its default or use a "
            "version that has it", api_key=message.api_key, api_version=version)
    return unsupported


def _encode_failed_factory(message: Message, version: int):
    def encode_failed(obj, exc):
        problem = find_encode_problem(message, version, obj)
        detail = problem if problem is not None else f"{type(exc).__name__}: {exc}"
        return MessageEncodeError(f"cannot encode {message.name} v{version}: {detail}",
                                  api_key=message.api_key, api_version=version)
    return encode_failed


# --------------------------------------------------------------------------------------
# Diagnosis of encode failures (slow path, run only after the encoder failed)
# --------------------------------------------------------------------------------------


def find_encode_problem(message: Message, version: int, obj: Any) -> str | None:
    """Walk ``obj`` against the declaration and describe the first value that cannot be
    encoded at ``version`` (its path and why), or None if every value fits."""
    flex = message.is_flexible(version)
    return _check_struct(message.fields, class_for(message), version, flex, obj,
                         message.name)


def _check_struct(fields, cls, version, flex, obj, path) -> str | None:
    if type(obj) is not cls:
        return f"{path}: expected a {cls.__qualname__}, got {type(obj).__name__}"
    for f in fields:
        if version not in f.versions:
            continue
        try:
            value = getattr(obj, f.name)
        except AttributeError:
            return f"{path}.{f.name}: not set"
        problem = _check_value(f, version, flex, value, f"{path}.{f.name}")
        if problem is not None:
            return problem
    return None


def _check_value(f: Field, version, flex, value, path) -> str | None:
    if value is None:
        if version in f.nullable:
            return None
        return f"{path}: None, but the field is not nullable in v{version}"
    if f.is_array:
        if not isinstance(value, (list, tuple)):
            return f"{path}: expected a list, got {type(value).__name__}"
        elem = None if f.is_struct else Field(f.name, f.element, f.versions.text)
        for i, item in enumerate(value):
            if f.is_struct:
                problem = _check_struct(f.fields, f.cls, version, flex, item, f"{path}[{i}]")
            elif item is None:
                problem = f"{path}[{i}]: None is not a valid array element"
            else:
                problem = _check_value(elem, version, flex, item, f"{path}[{i}]")
            if problem is not None:
                return problem
        return None
    if f.is_struct:
        return _check_struct(f.fields, f.cls, version, flex, value, path)
    t = f.type
    rng = int_range(t)
    if rng is not None:
        if not isinstance(value, int):
            return f"{path}: expected an int ({t}), got {type(value).__name__}"
        if not rng[0] <= value <= rng[1]:
            return f"{path}: {value} does not fit {t} [{rng[0]}, {rng[1]}]"
        return None
    if t == "bool":
        return None if isinstance(value, int) else \
            f"{path}: expected a bool, got {type(value).__name__}"
    if t == "float64":
        return None if isinstance(value, (float, int)) else \
            f"{path}: expected a float, got {type(value).__name__}"
    if t == "uuid":
        import uuid

        return None if isinstance(value, uuid.UUID) else \
            f"{path}: expected a uuid.UUID, got {type(value).__name__}"
    if t == "string":
        if not isinstance(value, str):
            return f"{path}: expected a str, got {type(value).__name__}"
        try:
            n = len(value.encode())
        except UnicodeEncodeError as exc:
            return f"{path}: cannot be encoded as UTF-8 ({exc.reason})"
        if not flex and n > 0x7FFF:
            return f"{path}: {n} UTF-8 bytes exceed the int16 length limit (32767)"
        return None
    if t in ("bytes", "records"):
        if isinstance(value, FileRegion):
            return None if t == "records" else \
                f"{path}: a FileRegion can only stand for a records field"
        try:
            memoryview(value)
        except TypeError:
            return f"{path}: expected a bytes-like object, got {type(value).__name__}"
        return None
    return f"{path}: unknown type {t}"

