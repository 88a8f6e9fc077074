"""Python classes for every request and response pylog speaks.

``messages.ProduceRequest``, ``messages.FetchResponse`` ... are generated from the
declarations on first access.  One class covers all versions of a message (as Kafka's
generated Java classes do); a field a version lacks holds its default after decoding.
Struct element types are attributes of their message class::

    from pylog.protocol import messages as m

    resp = m.ProduceResponse(responses=[
        m.ProduceResponse.TopicProduceResponse(name="t", partition_responses=[
            m.ProduceResponse.PartitionProduceResponse(index=0, base_offset=42)])])

Instances are plain ``__slots__`` objects with keyword-only constructors (every argument
defaults to the field's default), ``==``, ``repr()``, :meth:`Data.to_dict` and
:meth:`Data.from_dict`.  On decoded objects, a list or struct default of a field the
version lacks is made on first access (saving the allocation when nobody looks).  They
are not thread-safe to mutate; the classes themselves are built once under a lock and
then shared.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from pylog.protocol._errors import MessageEncodeError
from pylog.protocol.apis import _REQUESTS, _RESPONSES
from pylog.protocol.schemas import APIS
from pylog.protocol.schema import Field, Message, Struct

__all__ = ["Data", "class_for", "message_class"]

_LOCK = threading.RLock()
#: Message name -> (its table, API key): the declaration is imported on first use.
_BY_NAME: dict[str, tuple[Any, int]] = {}
for _key, _api in APIS.items():
    _BY_NAME[_api[1]] = (_REQUESTS, _key)
    _BY_NAME[_api[2]] = (_RESPONSES, _key)


class _Default:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<default>"


_D = _Default()


class Data:
    """Base of every generated message and struct class."""

    __slots__ = ()
    #: Field names, in declaration order.
    _fields: tuple[str, ...] = ()
    #: Field name -> class of its struct values, for struct and struct-array fields.
    _children: dict[str, type] = {}
    #: The declaration this class was built from.
    _decl: Struct | Field | None = None
    #: Field name -> factory of its default, for list and struct defaults.
    _lazy: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        # Only reached when a slot is unset: the decoder leaves list and struct defaults
        # of fields the version lacks to be made here, on first access.
        factory = type(self)._lazy.get(name)
        if factory is None:
            raise AttributeError(f"{type(self).__qualname__!r} object has no attribute {name!r}")
        value = factory()
        object.__setattr__(self, name, value)
        return value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for name in self._fields:
            if getattr(self, name) != getattr(other, name):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        parts = []
        for name in self._fields:
            v = getattr(self, name)
            if isinstance(v, memoryview):
                r = f"<{v.nbytes} bytes>"
            elif isinstance(v, (bytes, bytearray)) and len(v) > 64:
                r = f"<{len(v)} bytes>"
            else:
                r = repr(v)
            parts.append(f"{name}={r}")
        return f"{type(self).__qualname__}({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """A dict of field values, nested structs as dicts (records stay as they are)."""
        out = {}
        for name in self._fields:
            v = getattr(self, name)
            if isinstance(v, Data):
                v = v.to_dict()
            elif isinstance(v, list) and v and isinstance(v[0], Data):
                v = [x.to_dict() for x in v]
            out[name] = v
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Data:
        """Build an instance from a mapping (nested structs as mappings or instances);
        missing fields take their defaults.

        Raises
        ------
        MessageEncodeError
            For a key that is not a field of this struct.
        """
        unknown = [k for k in values if k not in cls._fields]
        if unknown:
            raise MessageEncodeError(
                f"{cls.__qualname__} has no field(s) {', '.join(map(repr, unknown))}; "
                f"its fields are {', '.join(cls._fields)}")
        kwargs = {}
        children = cls._children
        for k, v in values.items():
            child = children.get(k)
            if child is not None and v is not None:
                if isinstance(v, Mapping):
                    v = child.from_dict(v)
                elif isinstance(v, (list, tuple)):
                    v = [child.from_dict(x) if isinstance(x, Mapping) else x for x in v]
            kwargs[k] = v
        return cls(**kwargs)


def _build_class(qualname: str, fields: tuple[Field, ...], decl) -> type:
    """Create a ``Data`` subclass with a generated keyword-only ``__init__``."""
    names = [f.name for f in fields]
    ns: dict[str, Any] = {"_D": _D}
    params, body = [], []
    for f in fields:
        d = f.default
        if f.is_array or f.is_struct:
            if d is None:
                params.append(f"{f.name}=None")
                body.append(f"    self.{f.name} = {f.name}")
            else:
                factory = "[]" if f.is_array else f"_C_{f.name}()"
                if f.is_struct:
                    ns[f"_C_{f.name}"] = f.cls
                params.append(f"{f.name}=_D")
                body.append(f"    self.{f.name} = {factory} if {f.name} is _D else {f.name}")
        else:
            ns[f"_d_{f.name}"] = f.default_value()
            params.append(f"{f.name}=_d_{f.name}")
            body.append(f"    self.{f.name} = {f.name}")
    if params:
        src = f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    else:
        src = "def __init__(self):\n    pass\n"
    exec(compile(src, f"<pylog.protocol.messages {qualname}>", "exec"), ns)
    children = {f.name: f.cls for f in fields if f.is_struct}
    lazy = {f.name: (list if f.is_array else f.cls) for f in fields
            if (f.is_array or f.is_struct) and f.default is not None}
    cls = type(qualname.rsplit(".", 1)[-1], (Data,), {
        "__slots__": tuple(names),
        "__init__": ns["__init__"],
        "_fields": tuple(names),
        "_children": children,
        "_lazy": lazy,
        "_decl": decl,
        "__module__": __name__,
        "__qualname__": qualname,
    })
    return cls


def _build_struct_classes(message: Message, fields: tuple[Field, ...],
                          made: dict[str, type]) -> None:
    # Depth first: a struct's __init__ needs its children's classes for defaults.
    for f in fields:
        if not f.is_struct:
            continue
        if f.struct_name in made:
            f.cls = made[f.struct_name]
            continue
        _build_struct_classes(message, f.fields, made)
        f.cls = _build_class(f"{message.name}.{f.struct_name}", f.fields, f)
        made[f.struct_name] = f.cls


def class_for(message: Message) -> type:
    """The generated class of ``message`` (built on first use, then cached)."""
    cls = message.cls
    if cls is not None:
        return cls
    with _LOCK:
        if message.cls is None:
            made: dict[str, type] = {}
            _build_struct_classes(message, message.fields, made)
            cls = _build_class(message.name, message.fields, message)
            for struct_name, sub in made.items():
                setattr(cls, struct_name, sub)
            cls.API_KEY = message.api_key
            cls.KIND = message.kind
            message.cls = cls
    return message.cls


def message_class(api_key: int, kind: str) -> type:
    """The class of the request (``kind="request"``) or response of ``api_key``.

    Raises
    ------
    KeyError
        If pylog does not speak ``api_key``.
    """
    table = _REQUESTS if kind == "request" else _RESPONSES
    if kind not in ("request", "response"):
        raise ValueError(f"kind must be 'request' or 'response', not {kind!r}")
    return class_for(table[api_key])


def __getattr__(name: str) -> type:
    where = _BY_NAME.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    table, api_key = where
    return class_for(table[api_key])


def __dir__() -> list[str]:
    return sorted([*globals(), *_BY_NAME])

