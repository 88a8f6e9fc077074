"""The value classes of :mod:`pylog._value` behave as the dataclasses they replaced (#17).

Differential: every result, record and settings class of the broker, storage and record
modules is checked against a real ``@dataclass`` built from the same fields (same name,
order, defaults, frozenness): the same repr, equality, hash, immutability, and copies,
deep copies and pickles equal to the original.  (And ``pylog.broker``'s names, which load
on first use for the same start-up, are the modules' own.)
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import pytest

import pylog.broker
import pylog.storage
from pylog._value import FrozenValue, Value, frozen_dataclass

MODULES = sorted({f"pylog.broker.{m.name}" for m in pkgutil.iter_modules(pylog.broker.__path__)}
                 | {f"pylog.storage.{m.name}" for m in pkgutil.iter_modules(pylog.storage.__path__)}
                 | {"pylog.records", "pylog.server.config"})


def _classes(pred) -> list[type]:
    found = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == name and pred(obj):
                found[f"{name}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


VALUES = _classes(lambda c: issubclass(c, Value) and c._fields and not dataclasses.is_dataclass(c))
SETTINGS = _classes(lambda c: dataclasses.is_dataclass(c) and "_init_spec" in vars(c))


def _reference(cls: type) -> type:
    """The dataclass ``cls`` was: its fields and ``__init__`` defaults, frozen or not."""
    sig = inspect.signature(cls.__init__)
    fields = []
    for name in cls._fields:
        default = sig.parameters[name].default
        spec = dataclasses.field() if default is inspect.Parameter.empty else dataclasses.field(default=default)
        fields.append((name, Any, spec))
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=issubclass(cls, FrozenValue))


class _Token:
    """A distinct, comparable, hashable, picklable field value."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Token) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"T{self.n}"


def _args(cls: type, base: int) -> dict[str, Any]:
    return {name: _Token(base + i) for i, name in enumerate(cls._fields)}


def test_the_classes_were_found():
    names = {c.__name__ for c in VALUES}
    assert {"ProduceResult", "FetchResult", "PartitionInfo", "BatchMetadata", "ProducerStateEntry",
            "JoinGroupResult", "OffsetCommitKey", "TransactionMetadata", "ControlRecord", "RecoveryInfo",
            "CleanableInfo", "ConfigEntry", "Subscription"} <= names
    assert {"ServerConfig", "BrokerConfig", "LogConfig", "CleanerStats", "GroupCoordinatorConfig",
            "TransactionCoordinatorConfig"} <= {c.__name__ for c in SETTINGS}


@pytest.mark.parametrize("cls", VALUES, ids=lambda c: c.__qualname__)
def test_value_class_behaves_as_its_dataclass(cls):
    ref = _reference(cls)
    # __init__ takes the fields, in order, by position or keyword.
    assert [p for p in inspect.signature(cls.__init__).parameters][1:] == list(cls._fields)
    args = _args(cls, 0)
    ours, theirs = cls(**args), ref(**args)
    assert cls(*args.values()) == ours
    assert repr(ours) == repr(theirs)
    assert ours == cls(**_args(cls, 0)) and not ours != cls(**_args(cls, 0))
    for name in cls._fields:      # any one field differing makes them unequal
        assert ours != cls(**{**args, name: _Token(-1)})
    assert ours.__eq__(theirs) is NotImplemented and ours != theirs
    frozen = issubclass(cls, FrozenValue)
    if frozen:
        assert hash(ours) == hash(theirs) == hash(cls(**_args(cls, 0)))
        for name in cls._fields:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(ours, name, 1)
            with pytest.raises(dataclasses.FrozenInstanceError):
                delattr(ours, name)
    else:
        with pytest.raises(TypeError):
            hash(ours)
        name = cls._fields[0]
        setattr(ours, name, _Token(99))
        setattr(theirs, name, _Token(99))
        assert repr(ours) == repr(theirs)
        ours = cls(**args)
    for clone in (copy.copy(ours), copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(clone) is cls and clone == ours and repr(clone) == repr(ours)
    # _replace does what dataclasses.replace did: a copy with the fields given changed.
    name = cls._fields[-1]
    changed = ours._replace(**{name: _Token(7)})
    assert type(changed) is cls and changed == cls(**{**args, name: _Token(7)}) and ours == cls(**args)
    with pytest.raises(TypeError, match="no field"):
        ours._replace(no_such_field=1)


@pytest.mark.parametrize("cls", VALUES, ids=lambda c: c.__qualname__)
def test_container_defaults_are_not_shared(cls):
    """Defaults that were ``field(default_factory=...)`` give each instance its own."""
    sig = inspect.signature(cls.__init__)
    required = {n: _Token(i) for i, n in enumerate(cls._fields)
                if sig.parameters[n].default is inspect.Parameter.empty}
    a, b = cls(**required), cls(**required)
    for name in cls._fields:
        value = getattr(a, name)
        if isinstance(value, (list, dict, set)) or type(value).__name__ == "deque":
            assert value is not getattr(b, name) and not value


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__qualname__)
def test_settings_class_is_a_frozen_dataclass(cls):
    required = {f.name: _Token(i) for i, f in enumerate(dataclasses.fields(cls))
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    ours = cls(**required)
    ref = dataclasses.make_dataclass(cls.__name__, [(f.name, Any) for f in dataclasses.fields(cls)], frozen=True)
    values = {f.name: getattr(ours, f.name) for f in dataclasses.fields(cls)}
    assert repr(ours) == repr(ref(**values))
    assert ours == cls(**required) and ours == dataclasses.replace(ours)
    assert dataclasses.asdict(ours) == dataclasses.asdict(ref(**values))
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(ours, name, getattr(ours, name))
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(ours, name)
    try:
        expected = hash(ref(**values))
    except TypeError:          # a dict-valued field: unhashable, as the dataclass was
        with pytest.raises(TypeError):
            hash(ours)
    else:
        assert hash(ours) == expected
    clone = pickle.loads(pickle.dumps(ours))
    assert clone == ours and copy.deepcopy(ours) == ours


def test_settings_init_checks_its_arguments_as_a_dataclass_init():
    @frozen_dataclass
    class S:
        a: int
        b: list = dataclasses.field(default_factory=list)
        c: int = 3

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a must be >= 0")
            object.__setattr__(self, "c", self.c * 2)

    assert (S(1).a, S(1).b, S(1).c) == (1, [], 6)
    assert S(1).b is not S(1).b
    assert S(1, [2], 4) == S(a=1, b=[2], c=4) != S(1)
    assert dataclasses.replace(S(1, c=5), a=2) == S(2, c=10)
    with pytest.raises(ValueError, match="a must be"):
        S(-1)
    with pytest.raises(TypeError, match=r"S\.__init__\(\) missing 1 required argument\(s\): 'a'"):
        S()
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        S(1, d=2)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        S(1, a=2)
    with pytest.raises(TypeError, match="takes 4 positional arguments but 5 were given"):
        S(1, [], 3, 4)
    with pytest.raises(TypeError, match="defines __eq__"):
        @frozen_dataclass
        class Bad:
            a: int = 0

            def __eq__(self, other: object) -> bool:
                return True


def test_the_broker_package_names_load_on_first_use():
    import pylog.broker as broker
    from pylog.broker import assignors, group, partitioner

    assert set(broker.__all__) <= set(dir(broker))
    assert broker.RangeAssignor is assignors.RangeAssignor
    assert broker.murmur2 is partitioner.murmur2
    assert broker.GroupCoordinator is group.GroupCoordinator
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        broker.Nope  # noqa: B018
