"""Every field type and feature the codec supports, including ones no API pylog speaks
uses yet (float64, uint16, uint32, nullable structs, tagged arrays and strings), through
synthetic declarations."""

from __future__ import annotations

import math
import struct
import uuid

import pytest
from _protocol_strategies import struct_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog import _protocol as _c
from pylog.protocol import MalformedMessageError, MessageEncodeError
from pylog.protocol._plan import build_plan, read_uvarint, skip_tags, write_uvarint
from pylog.protocol.messages import class_for
from pylog.protocol.schema import Field as F
from pylog.protocol.schema import Message, VersionRange

SYNTH = Message(
    "SynthRequest", api_key=1000, kind="request", valid="0-2", flexible="2+",
    fields=[
        F("ratio", "float64", "0+"),
        F("port", "uint16", "0+"),
        F("big", "uint32", "0+", default=7),
        F("flag", "bool", "0+", default=True),
        F("tiny", "int8", "0+"),
        F("ids", "[]uuid", "1+"),
        F("names", "[]string", "0+", nullable="1+"),
        F("flags", "[]bool", "0+"),
        F("blob", "bytes", "0+", nullable="0+"),
        F("maybe", "Inner", "1+", nullable="1+", fields=[
            F("a", "int64", "1+"),
            F("b", "string", "1+", nullable="1+", default=None),
        ]),
        F("always", "Always", "0+", fields=[F("x", "int32", "0+", default=-1)]),
        F("note", "string", "2+", tagged="2+", tag=0, nullable="2+", default=None),
        F("extra", "[]Extra", "2+", tagged="2+", tag=5, fields=[
            F("k", "string", "2+"),
            F("v", "uint16", "2+", tagged="2+", tag=1, default=3),
        ]),
        F("gone", "int32", "0", default=-1),
        F("gone_ok", "int32", "0", default=-1, ignorable=True),
    ],
)
CLS = class_for(SYNTH)
PLANS = {v: build_plan(SYNTH, v) for v in range(3)}


def _enc(v, obj):
    return b"".join(_c.encode(PLANS[v], obj))


def _dec(v, buf):
    return _c.decode(PLANS[v], buf)


@pytest.mark.parametrize("version", [0, 1, 2])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_synthetic_roundtrip(version, data):
    obj = data.draw(struct_strategy(SYNTH.fields, CLS, version, SYNTH.is_flexible(version)))
    wire = _enc(version, obj)
    back = _dec(version, wire)
    assert back == obj
    assert _enc(version, back) == wire


def test_float64_is_ieee_big_endian():
    obj = CLS(ratio=-1.5)
    wire = _enc(0, obj)
    assert wire[:8] == struct.pack(">d", -1.5)
    for value in (math.inf, -0.0, 5e-324):
        assert _dec(0, _enc(0, CLS(ratio=value))).ratio == value


def test_nullable_struct_marker():
    null = _enc(1, CLS(maybe=None))
    full = _enc(1, CLS(maybe=CLS.Inner(a=1, b="z")))
    # Null is the single byte -1; present is 1 followed by the struct.
    assert len(full) == len(null) + 8 + 3
    assert _dec(1, null).maybe is None
    assert _dec(1, full).maybe == CLS.Inner(a=1, b="z")


def test_unsigned_ranges():
    assert _dec(0, _enc(0, CLS(port=65535, big=4294967295))).big == 4294967295
    for kw in ({"port": -1}, {"port": 65536}, {"big": -1}, {"big": 1 << 32}, {"tiny": 128}):
        with pytest.raises(MessageEncodeError, match="does not fit"):
            _enc(0, CLS(**kw))


def test_tagged_string_and_nested_tagged_fields():
    obj = CLS(note="hello", extra=[CLS.Extra(k="a", v=9), CLS.Extra(k="b")])
    wire = _enc(2, obj)
    back = _dec(2, wire)
    assert back.note == "hello" and back.extra == obj.extra
    assert back.extra[1].v == 3
    # Nothing tagged is written when every tagged field holds its default.
    plain = _enc(2, CLS())
    assert plain.endswith(b"\x00") and _dec(2, plain).note is None


def test_tagged_value_must_fill_its_size():
    wire = bytearray(_enc(2, CLS(note="hi")))
    # The last bytes are: count 1, tag 0, size 3, compact string (len 2+1) "hi".
    assert wire[-6:] == b"\x01\x00\x03\x03hi"
    wire[-4] = 4  # claim one more byte than the value uses
    wire += b"\x00"
    with pytest.raises(MalformedMessageError, match="unread"):
        _dec(2, bytes(wire))


def test_non_ignorable_absent_field():
    with pytest.raises(MessageEncodeError, match="gone=5"):
        _enc(1, CLS(gone=5))
    assert _dec(1, _enc(1, CLS(gone_ok=5))).gone_ok == -1
    assert _dec(0, _enc(0, CLS(gone=5))).gone == 5


def test_bool_decoding_accepts_any_nonzero_byte():
    wire = bytearray(_enc(0, CLS(flag=False)))
    assert wire[14] == 0  # ratio 8, port 2, big 4, then flag
    wire[14] = 0x42
    assert _dec(0, bytes(wire)).flag is True


def test_uuid_arrays():
    ids = [uuid.uuid4() for _ in range(3)]
    assert _dec(1, _enc(1, CLS(ids=ids))).ids == ids
    with pytest.raises(MessageEncodeError, match=r"ids\[1\]: expected a uuid"):
        _enc(1, CLS(ids=[ids[0], str(ids[1])]))


def test_version_range_notation():
    assert 5 in VersionRange("3+") and 2 not in VersionRange("3+")
    assert list(filter(VersionRange("0-12").__contains__, range(20))) == list(range(13))
    assert VersionRange("none").empty and 0 not in VersionRange("none")
    assert 5 in VersionRange("5") and 6 not in VersionRange("5")
    with pytest.raises(ValueError):
        VersionRange("4-2")


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2**21, 2**28, 2**32 - 1])
def test_uvarint_helpers(n):
    raw = write_uvarint(n)
    assert read_uvarint(raw + b"\x99", 0) == (n, len(raw))
    assert len(raw) == max(1, (n.bit_length() + 6) // 7)


def test_uvarint_helper_errors():
    with pytest.raises(OverflowError):
        write_uvarint(2**32)
    with pytest.raises(MalformedMessageError):
        read_uvarint(b"\x80\x80", 0)
    with pytest.raises(MalformedMessageError):
        read_uvarint(b"\xff\xff\xff\xff\x10", 0)
    assert skip_tags(b"\x01\x02ab\x03\x00z", 0, 2) == 6
    with pytest.raises(MalformedMessageError):
        skip_tags(b"\x01\x09ab", 0, 1)


def test_plan_refuses_a_class_without_the_slot():
    class NotData:
        __slots__ = ("a",)

    with pytest.raises(TypeError, match="not a __slots__ member"):
        _c.slot_offset(NotData, "b")
    assert _c.slot_offset(NotData, "a") > 0
