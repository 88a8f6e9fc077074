"""Value classes that cost nothing to define (#17: ``pylog serve`` listens within 100 ms).

``@dataclass`` writes each class's ``__init__``, ``__repr__`` and ``__eq__`` (frozen:
also ``__setattr__``, ``__delattr__`` and ``__hash__``) as source text and compiles it
when the module is imported: 0.2-3 ms a class, about 25 ms for the 49 classes a server
defined before it listened.  The classes here behave as those dataclasses did, with code
compiled once into the package's bytecode:

- :class:`Value` and :class:`FrozenValue` are bases of plain value holders (results,
  records, descriptions).  A subclass lists its fields in ``_fields`` (also its
  ``__slots__`` when it has them) and writes its own ``__init__``: several are built per
  partition of a request, where a generic ``__init__`` would cost on every call.  The
  bases give equality (same class, equal fields), a ``Name(field=value, ...)`` repr and,
  frozen, immutability (:class:`dataclasses.FrozenInstanceError`), a hash over the fields
  and pickling/copying, as ``@dataclass(frozen=True)`` does; ``obj._replace(field=...)``
  takes the place of :func:`dataclasses.replace`, since they are not dataclasses.
- :func:`frozen_dataclass` is for classes read through :func:`dataclasses.fields`,
  :func:`dataclasses.replace` and :func:`dataclasses.asdict` (settings, statistics):
  they stay dataclasses (the field registry is cheap) but get a shared keyword
  ``__init__`` (defaults, default factories, ``__post_init__``) and the frozen value
  behaviour instead of generated code.  They are built a few times per request at most,
  so the shared ``__init__`` costs nothing that matters.

Thread safety: the classes are immutable (frozen) or plain objects; nothing here keeps
state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError
from typing import Any, TypeVar, dataclass_transform

__all__ = ["Value", "FrozenValue", "frozen_dataclass"]

_T = TypeVar("_T")


class Value:
    """Base of a mutable value holder: equality and repr over ``_fields`` (as a
    non-frozen dataclass: equal when of the same class with equal fields; unhashable)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        items = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({items})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        fields = self._fields
        return tuple(getattr(self, n) for n in fields) == tuple(getattr(other, n) for n in fields)

    __hash__ = None  # type: ignore[assignment]

    def _replace(self: _T, **changes: Any) -> _T:
        """A copy with ``changes`` (what :func:`dataclasses.replace` did for these
        classes when they were dataclasses; ``_replace`` as a named tuple has it)."""
        values = {name: getattr(self, name) for name in self._fields}  # type: ignore[attr-defined]
        unknown = set(changes) - values.keys()
        if unknown:
            raise TypeError(f"{self.__class__.__qualname__} has no field(s) {', '.join(sorted(unknown))}")
        values.update(changes)
        return self.__class__(**values)


class FrozenValue(Value):
    """Base of an immutable value holder (as ``@dataclass(frozen=True)``): its
    ``__init__`` sets the fields with ``object.__setattr__``; assignments and deletions
    afterwards raise :class:`dataclasses.FrozenInstanceError`; the hash is the fields'."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self._fields))

    # copy, deepcopy and pickle restore the fields past the frozen __setattr__.
    def __getstate__(self) -> tuple:
        return tuple(getattr(self, n) for n in self._fields)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self._fields, state):
            object.__setattr__(self, name, value)


def _shared_init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = self.__class__
    spec: tuple[tuple[str, Any, Any], ...] = cls._init_spec
    if len(args) > len(spec):
        raise TypeError(f"{cls.__qualname__}.__init__() takes {len(spec) + 1} positional arguments "
                        f"but {len(args) + 1} were given")
    for (field, _, _), _value in zip(spec, args):
        if field in kwargs:
            raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for argument {field!r}")
    if kwargs:
        known = cls._init_names
        for key in kwargs:
            if key not in known:
                raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument {key!r}")
    setattr_ = object.__setattr__
    missing = []
    for i, (field, default, factory) in enumerate(spec):
        if i < len(args):
            value = args[i]
        elif field in kwargs:
            value = kwargs[field]
        elif factory is not dataclasses.MISSING:
            value = factory()
        elif default is not dataclasses.MISSING:
            value = default
        else:
            missing.append(field)
            continue
        setattr_(self, field, value)
    if missing:
        raise TypeError(f"{cls.__qualname__}.__init__() missing {len(missing)} required argument(s): "
                        f"{', '.join(map(repr, missing))}")
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen_dataclass(cls: type[_T]) -> type[_T]:
    """Make ``cls`` (annotated fields with defaults or ``field(default_factory=...)``,
    as for ``@dataclass(frozen=True)``) a frozen dataclass without generated code: a
    dataclass as far as :mod:`dataclasses` can tell (``fields``, ``replace``,
    ``asdict``), built by keyword or position, ``__post_init__`` run once the fields are
    set, with a frozen dataclass's equality, repr, hash and immutability."""
    for attr in ("__init__", "__repr__", "__eq__", "__setattr__", "__delattr__", "__hash__"):
        if attr in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} defines {attr}: frozen_dataclass() provides it")
    cls = dataclasses.dataclass(init=False, repr=False, eq=False)(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    cls._fields = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type, attr-defined]
    cls._init_spec = tuple((f.name, f.default, f.default_factory) for f in fields)  # type: ignore[attr-defined]
    cls._init_names = frozenset(f.name for f in fields)  # type: ignore[attr-defined]
    cls.__init__ = _shared_init  # type: ignore[misc]
    for attr in ("__repr__", "__eq__", "__setattr__", "__delattr__", "__hash__"):
        setattr(cls, attr, FrozenValue.__dict__.get(attr) or Value.__dict__[attr])
    return cls
