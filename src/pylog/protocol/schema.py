"""Declarative description of Kafka protocol messages.

A :class:`Message` is one request or response of one API (``ProduceRequest``), valid for a
range of versions; its :class:`Field` s say in which versions they exist, whether they are
nullable or tagged in a version, and their default.  The declarations in
:mod:`pylog.protocol.schemas` are generated from Kafka's JSON message schemas by
``tools/gen_schemas.py`` and use Kafka's version-range notation (``"3+"``, ``"0-12"``,
``"5"``, ``"none"``) so they can be checked against the specification line by line.

Types are Kafka's: ``bool``, ``int8``, ``int16``, ``int32``, ``int64``, ``uint16``,
``uint32``, ``float64``, ``string``, ``bytes``, ``records``, ``uuid``, ``[]T`` (an array of
any of these) and struct types (a CamelCase name with nested ``fields``).

Declarations are immutable after construction and safe to share between threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import uuid

__all__ = ["VersionRange", "Field", "Struct", "Message", "NO_DEFAULT", "SCALAR_TYPES"]

#: The primitive types a field may have (besides arrays and structs).
SCALAR_TYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint16", "uint32", "float64",
     "string", "bytes", "records", "uuid"]
)

_INT_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
}

_ZERO_UUID: Any = None


def zero_uuid() -> uuid.UUID:
    """The zero UUID, a uuid field's natural default (Kafka's "no id").  :mod:`uuid` (with
    :mod:`platform`, ~2 ms) is imported on first use: the first message class with a
    uuid field, not ``pylog serve``'s start-up (#17)."""
    global _ZERO_UUID
    if _ZERO_UUID is None:
        import uuid

        _ZERO_UUID = uuid.UUID(int=0)
    return _ZERO_UUID


_OPEN = 0x7FFF  # the top of an open-ended range ("3+"): versions are int16


class _NoDefault:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_DEFAULT"


#: Marker for "the schema gives no default": the type's natural default applies
#: (0, False, "", b"", [], the zero UUID, a struct of defaults; ``None`` for records).
NO_DEFAULT: Any = _NoDefault()


class VersionRange:
    """A closed range of versions written in Kafka's notation.

    ``"3+"`` is 3 and up, ``"0-12"`` is 0 to 12, ``"5"`` is only 5, ``"none"`` is empty.
    """

    __slots__ = ("low", "high", "text")

    def __init__(self, text: str) -> None:
        text = text.strip()
        self.text = text
        if text == "none":
            self.low, self.high = 1, 0
        elif text.endswith("+"):
            self.low, self.high = int(text[:-1]), _OPEN
        elif "-" in text:
            low, high = text.split("-", 1)
            self.low, self.high = int(low), int(high)
        else:
            self.low = self.high = int(text)
        if self.low < 0 or (self.high < self.low and text != "none"):
            raise ValueError(f"bad version range {text!r}")

    def __contains__(self, version: int) -> bool:
        return self.low <= version <= self.high

    @property
    def empty(self) -> bool:
        return self.high < self.low

    def intersects(self, low: int, high: int) -> bool:
        return not self.empty and self.low <= high and low <= self.high

    def __repr__(self) -> str:
        return f"VersionRange({self.text!r})"


class Field:
    """One field of a message or struct.

    Parameters
    ----------
    name : str
        snake_case field name (the attribute name on decoded objects).
    type : str
        Kafka type: a scalar (``"int32"``), ``"[]T"`` for arrays, or a struct name.
    versions : str
        Versions in which the field exists.
    nullable : str
        Versions in which it may be null (strings, bytes, records, arrays, structs).
    tagged : str
        Versions in which it is a tagged field (``tag`` must be given).
    tag : int or None
        Tag number of a tagged field.
    default : object
        Value when absent from a version or not sent as a tag; :data:`NO_DEFAULT` for the
        type's natural default.
    ignorable : bool
        If False, encoding a version that lacks the field while it holds a non-default
        value is an error (Kafka's rule: the value would silently be lost).
    fields : sequence of Field
        The fields of a struct type (for ``"[]Struct"`` and ``"Struct"`` types).
    """

    __slots__ = ("name", "type", "versions", "nullable", "tagged", "tag", "default",
                 "ignorable", "fields", "element", "is_array", "struct_name", "cls")

    def __init__(self, name: str, type: str, versions: str, *, nullable: str = "none",
                 tagged: str = "none", tag: int | None = None, default: Any = NO_DEFAULT,
                 ignorable: bool = False, fields: Iterable[Field] | None = None) -> None:
        self.name = name
        self.type = type
        self.versions = VersionRange(versions)
        self.nullable = VersionRange(nullable)
        self.tagged = VersionRange(tagged)
        self.tag = tag
        self.default = default
        self.ignorable = ignorable
        self.fields = tuple(fields) if fields is not None else None
        self.is_array = type.startswith("[]")
        self.element = type[2:] if self.is_array else type
        self.struct_name = None if self.element in SCALAR_TYPES else self.element
        #: The generated class of a struct field's values (set by pylog.protocol.messages).
        self.cls = None
        if self.struct_name is not None and self.fields is None:
            raise ValueError(f"field {name}: struct type {type} needs fields")
        if not self.tagged.empty and tag is None:
            raise ValueError(f"field {name}: tagged versions without a tag")
        if self.struct_name is None and not self.is_array:
            if default is not NO_DEFAULT and default is not None and type in _INT_RANGES:
                low, high = _INT_RANGES[type]
                if not low <= default <= high:
                    raise ValueError(f"field {name}: default {default} outside {type}")

    @property
    def is_struct(self) -> bool:
        return self.struct_name is not None

    def default_value(self) -> Any:
        """A fresh default value (lists and structs are new objects on every call)."""
        d = self.default
        if d is not NO_DEFAULT:
            if d is None or not (self.is_array or self.is_struct):
                return d
        if self.is_array:
            return []
        if self.is_struct:
            if self.cls is None:
                raise RuntimeError(f"field {self.name}: message classes not built yet")
            return self.cls()
        return natural_default(self.type)

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.type!r}, {self.versions.text!r})"


def natural_default(type_name: str) -> Any:
    """The default of a scalar type when the schema gives none."""
    if type_name in _INT_RANGES:
        return 0
    if type_name == "bool":
        return False
    if type_name == "float64":
        return 0.0
    if type_name == "string":
        return ""
    if type_name == "bytes":
        return b""
    if type_name == "uuid":
        return zero_uuid()
    if type_name == "records":
        return None
    raise ValueError(f"no natural default for type {type_name!r}")


def int_range(type_name: str) -> tuple[int, int] | None:
    """(min, max) of an integer type, or None for other types."""
    return _INT_RANGES.get(type_name)


class Struct:
    """A named group of fields: the body of a message, or an element of a struct array."""

    __slots__ = ("name", "fields", "cls")

    def __init__(self, name: str, fields: Iterable[Field]) -> None:
        self.name = name
        self.fields = tuple(fields)
        #: The generated class of this message (set by pylog.protocol.messages).
        self.cls = None
        seen = set()
        for f in self.fields:
            if f.name in seen:
                raise ValueError(f"{name}: duplicate field {f.name}")
            seen.add(f.name)

    def __repr__(self) -> str:
        return f"Struct({self.name!r})"


class Message(Struct):
    """A request or response of one API.

    Parameters
    ----------
    name : str
        Kafka's message name, e.g. ``"ProduceRequest"``.
    api_key : int
        The API key.
    kind : str
        ``"request"`` or ``"response"``.
    valid : str
        The versions pylog speaks (a sub-range of Kafka's ``validVersions``).
    flexible : str
        Kafka's ``flexibleVersions``: from these on, strings, arrays and bytes are compact
        and every struct ends with a tagged-field section (KIP-482).
    fields : sequence of Field
    """

    __slots__ = ("api_key", "kind", "valid", "flexible")

    def __init__(self, name: str, *, api_key: int, kind: str, valid: str, flexible: str,
                 fields: Iterable[Field]) -> None:
        super().__init__(name, fields)
        if kind not in ("request", "response"):
            raise ValueError(f"{name}: kind must be 'request' or 'response'")
        self.api_key = api_key
        self.kind = kind
        self.valid = VersionRange(valid)
        self.flexible = VersionRange(flexible)

    @property
    def min_version(self) -> int:
        return self.valid.low

    @property
    def max_version(self) -> int:
        return self.valid.high

    def is_flexible(self, version: int) -> bool:
        """True when ``version`` uses the compact/tagged encoding (any version, even one
        pylog does not speak: the rule is open-ended, which the request header needs)."""
        return version in self.flexible

    def __repr__(self) -> str:
        return f"Message({self.name!r}, api_key={self.api_key}, valid={self.valid.text!r})"
