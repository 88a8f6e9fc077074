"""pylog._value.ValueTuple behaves as typing.NamedTuple (checked against it, the
independent implementation), without generating code per class (#17)."""

from __future__ import annotations

import copy
import pickle
from typing import NamedTuple

import pytest

from pylog._value import ValueTuple


class Ours(ValueTuple):
    """An epoch entry."""

    __slots__ = ()
    epoch: int
    start_offset: int = 0


class Theirs(NamedTuple):
    epoch: int
    start_offset: int = 0


CALLS = [((1, 2), {}), ((1,), {}), ((), {"epoch": 3}), ((4,), {"start_offset": 5}),
         ((), {"start_offset": 6, "epoch": 7})]


@pytest.mark.parametrize("args, kwargs", CALLS)
def test_construction_reads_and_writes_as_a_named_tuple(args, kwargs):
    ours, theirs = Ours(*args, **kwargs), Theirs(*args, **kwargs)
    assert tuple(ours) == tuple(theirs) and ours == theirs and hash(ours) == hash(theirs)
    assert (ours.epoch, ours.start_offset) == (theirs.epoch, theirs.start_offset)
    assert repr(ours) == repr(theirs).replace("Theirs", "Ours")
    assert ours._asdict() == theirs._asdict()
    assert ours._replace(epoch=9) == theirs._replace(epoch=9)
    assert type(ours._replace(epoch=9)) is Ours
    assert Ours._make(ours) == ours and type(Ours._make(ours)) is Ours
    for clone in (pickle.loads(pickle.dumps(ours)), copy.copy(ours), copy.deepcopy(ours)):
        assert clone == ours and type(clone) is Ours
    epoch, start = ours
    assert (epoch, start) == tuple(theirs)


def test_class_attributes_are_a_named_tuple_s():
    assert Ours._fields == Theirs._fields == ("epoch", "start_offset")
    assert Ours._field_defaults == Theirs._field_defaults == {"start_offset": 0}
    assert Ours.__match_args__ == Theirs.__match_args__
    assert Ours.__doc__ == "An epoch entry."
    assert Ours.__basicsize__ == tuple.__basicsize__        # no instance dict or slots
    with pytest.raises(AttributeError):
        Ours(1).epoch = 2                                     # type: ignore[misc]
    match Ours(1, 2):
        case Ours(e, s):
            assert (e, s) == (1, 2)


@pytest.mark.parametrize("args, kwargs", [((), {}), ((1, 2, 3), {}), ((1,), {"epoch": 2}),
                                          ((1,), {"nope": 2})])
def test_bad_calls_raise_type_error_as_a_named_tuple_does(args, kwargs):
    with pytest.raises(TypeError):
        Theirs(*args, **kwargs)
    with pytest.raises(TypeError):
        Ours(*args, **kwargs)


def test_bad_replace_and_make_raise():
    with pytest.raises(ValueError):
        Ours(1)._replace(nope=2)
    with pytest.raises(TypeError):
        Ours._make([1, 2, 3])


def test_definitions_a_named_tuple_refuses_are_refused():
    with pytest.raises(TypeError):
        class NoSlots(ValueTuple):
            a: int

    with pytest.raises(TypeError):
        class DefaultFirst(ValueTuple):
            __slots__ = ()
            a: int = 0
            b: int

    with pytest.raises(ValueError):
        class Underscore(ValueTuple):
            __slots__ = ()
            _a: int

