"""Serdes write what Kafka's serializers write."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from pylog.streams import Serdes, SerializationError


def test_fixed_width_numbers_are_big_endian_as_kafka():
    assert Serdes.integer().serialize(1) == b"\x00\x00\x00\x01"
    assert Serdes.integer().serialize(-2) == b"\xff\xff\xff\xfe"
    assert Serdes.long().serialize(258) == b"\x00" * 6 + b"\x01\x02"
    assert Serdes.double().serialize(1.0) == b"\x3f\xf0" + b"\x00" * 6


@given(st.integers(-(2 ** 63), 2 ** 63 - 1), st.text(), st.binary())
def test_round_trips(n, s, b):
    assert Serdes.long().deserialize(Serdes.long().serialize(n)) == n
    assert Serdes.string().deserialize(Serdes.string().serialize(s)) == s
    assert Serdes.bytes().deserialize(Serdes.bytes().serialize(b)) == b


def test_none_is_a_tombstone_both_ways():
    for serde in (Serdes.string(), Serdes.long(), Serdes.json(), Serdes.bytes()):
        assert serde.serialize(None) is None and serde.deserialize(None) is None


def test_errors_say_what_failed():
    with pytest.raises(SerializationError, match="long needs 8 bytes, got 3"):
        Serdes.long().deserialize(b"abc")
    with pytest.raises(SerializationError, match="string serde takes str"):
        Serdes.string().serialize(5)


def test_from_fns_and_json():
    upper = Serdes.from_fns(lambda s: s.upper().encode(), lambda b: b.decode().lower(), "upper")
    assert upper.serialize("ab") == b"AB" and upper.deserialize(b"AB") == "ab"
    assert Serdes.json().serialize({"a": [1, 2]}) == b'{"a":[1,2]}'
