"""Fuzzing the decoders: random bytes and mutated valid messages, for every API and version.

The only acceptable outcomes are a decoded message or MalformedMessageError (the protocol
error class, a pylog InvalidRequestError); never IndexError, struct.error, MemoryError,
a crash, or a read past the buffer.  A message that decodes must encode again.
"""

from __future__ import annotations

import random
import struct

import pytest
from _protocol_strategies import all_versions, message_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog import protocol
from pylog.protocol import MalformedMessageError, UnsupportedRequestError
from pylog.protocol.apis import api_name

ALL = all_versions()
IDS = [f"{api_name(k)}{kind.capitalize()}-v{v}" for k, kind, v in ALL]


def _decode(kind, key, version, buf):
    dec = protocol.decode_request_body if kind == "request" else protocol.decode_response_body
    return dec(key, version, buf)


def _encode(kind, key, version, obj):
    enc = protocol.encode_request_body if kind == "request" else protocol.encode_response_body
    return b"".join(enc(key, version, obj))


def _try(kind, key, version, buf):
    try:
        obj = _decode(kind, key, version, buf)
    except MalformedMessageError as exc:
        assert exc.api_key == key and exc.api_version == version
        return None
    # Anything that decodes is a valid message: it encodes, and that encoding decodes to
    # the same message (the bytes may differ: non-canonical varints, unknown tags, bool
    # bytes other than 0/1 are all accepted on input).
    again = _encode(kind, key, version, obj)
    assert _decode(kind, key, version, again) == obj
    return obj


def _mutations(rng: random.Random, wire: bytes, n: int):
    """Truncations, bit flips, byte overwrites with boundary values, insertions, deletions."""
    specials = [b"\xff", b"\x00", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                b"\x80\x00\x00\x00", b"\xff\xff\xff\xff\x0f", b"\xff\xff\xff\xff\xff\x01"]
    for _ in range(n):
        b = bytearray(wire)
        op = rng.randrange(5)
        if op == 0 or not b:
            b = b[:rng.randrange(len(b) + 1)]
        elif op == 1:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            i = rng.randrange(len(b))
            s = rng.choice(specials)
            b[i:i + len(s)] = s
        elif op == 3:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.choice(specials)
        else:
            i = rng.randrange(len(b))
            del b[i:i + rng.randrange(1, 5)]
        yield bytes(b)


@pytest.mark.parametrize(("key", "kind", "version"), ALL, ids=IDS)
def test_random_bytes(key, kind, version, rng):
    for size in [0, 1, 2, 3, 4, 5, 8, 13, 21, 40, 100, 300]:
        for _ in range(4):
            _try(kind, key, version, rng.randbytes(size))
    # Mostly-0xff and mostly-0x00 inputs hit null and huge-length paths.
    for fill in (b"\xff", b"\x00", b"\x7f", b"\x01"):
        for size in (1, 7, 64):
            _try(kind, key, version, fill * size)


@pytest.mark.parametrize(("key", "kind", "version"), ALL, ids=IDS)
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_messages(key, kind, version, data):
    obj = data.draw(message_strategy(key, kind, version))
    wire = _encode(kind, key, version, obj)
    seed = data.draw(st.integers(0, 2**32 - 1))
    for bad in _mutations(random.Random(seed), wire, 40):
        _try(kind, key, version, bad)


def test_mutated_request_frames(rng):
    """Whole frames, header included: decode_request raises only protocol errors."""
    frames = []
    for key, kind, version in ALL[::7]:
        if kind != "request":
            continue
        body = protocol.messages.message_class(key, kind)()
        frames.append(b"".join(protocol.encode_request(key, version, 1, "fuzz", body))[4:])
    for frame in frames:
        for bad in _mutations(rng, frame, 60):
            try:
                protocol.decode_request(bad)
            except UnsupportedRequestError as exc:
                assert exc.header is not None
            except MalformedMessageError:
                pass


def test_huge_counts_do_not_allocate():
    # A Metadata v0 response claiming 2**31-1 brokers in an 8-byte message: rejected by the
    # bytes-left check before any list is built.
    buf = struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 4
    with pytest.raises(MalformedMessageError, match="cannot fit"):
        protocol.decode_response_body(3, 0, buf)
    # A flexible array claiming 2**32-2 elements.
    with pytest.raises(MalformedMessageError):
        protocol.decode_response_body(3, 12, b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff\x0f")


@pytest.mark.long
@pytest.mark.parametrize(("key", "kind", "version"), ALL, ids=IDS)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_messages_long(key, kind, version, data):
    obj = data.draw(message_strategy(key, kind, version))
    wire = _encode(kind, key, version, obj)
    seed = data.draw(st.integers(0, 2**32 - 1))
    for bad in _mutations(random.Random(seed), wire, 300):
        _try(kind, key, version, bad)


@pytest.mark.long
@pytest.mark.parametrize(("key", "kind", "version"), ALL, ids=IDS)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(buf=st.binary(max_size=200))
def test_random_bytes_long(key, kind, version, buf):
    _try(kind, key, version, buf)
