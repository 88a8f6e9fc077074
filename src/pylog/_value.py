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
- :class:`ValueTuple` is a base of named tuples: ``collections.namedtuple`` (and
  ``typing.NamedTuple``) compile each class's ``__new__`` from source text too, 0.1-0.3
  ms a class.  A subclass annotates its fields (defaults allowed) as for
  ``typing.NamedTuple`` and sets ``__slots__ = ()``; it is a tuple with named fields
  (the C descriptors ``namedtuple`` uses), ``_fields``, ``_field_defaults``, ``_make``,
  ``_replace``, ``_asdict``, a ``Name(field=value, ...)`` repr, and pickles and copies
  as one.
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
from typing import Any, ClassVar, Iterable, TypeVar, dataclass_transform

try:
    from _collections import _tuplegetter   # the field descriptor namedtuple's classes use
except ImportError:  # pragma: no cover - CPython has it; other interpreters may not
    from operator import itemgetter as _itemgetter

    def _tuplegetter(index: int, doc: str) -> Any:  # type: ignore[no-redef]
        return property(_itemgetter(index), doc=doc)

__all__ = ["Value", "FrozenValue", "ValueTuple", "frozen_dataclass"]

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


class ValueTuple(tuple):
    """Base of a named tuple defined without generated code (see the module docstring).

    ::

        class EpochEntry(ValueTuple):
            __slots__ = ()
            epoch: int
            start_offset: int = 0
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _field_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__slots__" not in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} must set __slots__ = () (a named tuple has no instance dict)")
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = {}
        for i, name in enumerate(names):
            if name.startswith("_"):
                raise ValueError(f"{cls.__qualname__}: field names cannot start with an underscore: {name!r}")
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            elif defaults:
                raise TypeError(f"{cls.__qualname__}: field {name!r} without a default follows one with a default")
            setattr(cls, name, _tuplegetter(i, f"Alias for field number {i}"))
        cls._fields = names
        cls._field_defaults = defaults
        cls.__match_args__ = names

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != len(cls._fields):
            args = cls._bind(args, kwargs)
        return tuple.__new__(cls, args)

    @classmethod
    def _bind(cls, args: tuple, kwargs: dict[str, Any]) -> tuple:
        """The field values of a call by position, keyword and default."""
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__qualname__}() takes {len(fields)} positional arguments but {len(args)} were given")
        values = list(args)
        for name in fields[len(args):]:
            if name in kwargs:
                values.append(kwargs.pop(name))
            elif name in cls._field_defaults:
                values.append(cls._field_defaults[name])
            else:
                raise TypeError(f"{cls.__qualname__}() missing required argument: {name!r}")
        if kwargs:
            name = next(iter(kwargs))
            why = "multiple values for argument" if name in fields else "an unexpected keyword argument"
            raise TypeError(f"{cls.__qualname__}() got {why} {name!r}")
        return tuple(values)

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Any:
        values = tuple(iterable)
        if len(values) != len(cls._fields):
            raise TypeError(f"expected {len(cls._fields)} arguments, got {len(values)}")
        return tuple.__new__(cls, values)

    def _replace(self: _T, **changes: Any) -> _T:
        values = dict(zip(self._fields, self))  # type: ignore[attr-defined]
        unknown = changes.keys() - values.keys()
        if unknown:
            raise ValueError(f"got unexpected field names: {sorted(unknown)!r}")
        values.update(changes)
        return tuple.__new__(self.__class__, values.values())  # type: ignore[type-var]

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self))

    def __repr__(self) -> str:
        items = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self))
        return f"{self.__class__.__name__}({items})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)


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
