"""Serdes: how keys and values become bytes and back (Kafka's ``Serdes``).

A :class:`Serde` pairs a serializer and a deserializer.  Both map ``None`` to ``None``
(Kafka's serializers do: a null value is a tombstone, not an empty byte string), so the
user's functions never see ``None``.  The fixed-width numbers are big-endian, as Kafka's
``IntegerSerializer``/``LongSerializer``/``DoubleSerializer`` write them, so topics written by
pylog.streams read back in Kafka Streams and the other way round.

Serdes hold no state and are safe to share between threads and tasks.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable, Optional

from pylog.errors import PylogError

__all__ = ["Serde", "Serdes", "SerializationError"]


class SerializationError(PylogError, ValueError):
    """A key or value could not be (de)serialised (Kafka's ``SerializationException``)."""


def _guard(fn: Callable[[Any], Any], what: str, name: str) -> Callable[[Any], Any]:
    def call(data: Any) -> Any:
        if data is None:
            return None
        try:
            return fn(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"the {name} serde could not {what} {data!r:.80}: {exc}") from exc
    return call


class Serde:
    """A serializer and a deserializer: ``serialize(obj) -> bytes | None``,
    ``deserialize(bytes) -> obj | None``; both pass ``None`` through.

    Parameters
    ----------
    ser, de
        One-argument callables for non-``None`` data.
    name
        Shown in errors and ``repr``.
    """

    __slots__ = ("serialize", "deserialize", "name")

    def __init__(self, ser: Callable[[Any], bytes], de: Callable[[bytes], Any], name: str = "custom") -> None:
        self.name = name
        self.serialize = _guard(ser, "serialize", name)
        self.deserialize = _guard(de, "deserialize", name)

    def __repr__(self) -> str:
        return f"Serdes.{self.name}()"


def _bytes_ser(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"the bytes serde takes bytes, got {type(data).__name__} (pass key_serde=/value_serde=)")


def _str_ser(data: Any) -> bytes:
    if not isinstance(data, str):
        raise TypeError(f"the string serde takes str, got {type(data).__name__}")
    return data.encode()


def _fixed(fmt: str, name: str) -> Serde:
    st = struct.Struct(fmt)

    def de(data: bytes) -> Any:
        if len(data) != st.size:
            raise ValueError(f"{name} needs {st.size} bytes, got {len(data)}")
        return st.unpack(data)[0]
    return Serde(st.pack, de, name)


def _bytes_serialize(data: Any) -> Optional[bytes]:
    # the hot path of bytes topics: no wrapper frame; None and bytes pass as they are
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise SerializationError(f"the bytes serde could not serialize {data!r:.80}: the bytes serde takes bytes, "
                             f"got {type(data).__name__} (pass key_serde=/value_serde=)")


def _bytes_deserialize(data: Any) -> Optional[bytes]:
    return data if data is None or type(data) is bytes else bytes(data)


_BYTES = Serde(_bytes_ser, bytes, "bytes")
_BYTES.serialize = _bytes_serialize
_BYTES.deserialize = _bytes_deserialize
_STRING = Serde(_str_ser, lambda b: bytes(b).decode(), "string")
_INTEGER = _fixed(">i", "integer")
_LONG = _fixed(">q", "long")
_DOUBLE = _fixed(">d", "double")
_JSON = Serde(lambda o: json.dumps(o, separators=(",", ":")).encode(), json.loads, "json")


class Serdes:
    """Factory of the built-in serdes (Kafka's ``Serdes``)."""

    @staticmethod
    def bytes() -> Serde:
        return _BYTES

    @staticmethod
    def string() -> Serde:
        return _STRING

    @staticmethod
    def integer() -> Serde:
        """32-bit signed, big-endian (Kafka's ``Serdes.Integer()``)."""
        return _INTEGER

    @staticmethod
    def long() -> Serde:
        """64-bit signed, big-endian (Kafka's ``Serdes.Long()``)."""
        return _LONG

    @staticmethod
    def double() -> Serde:
        """IEEE 754 binary64, big-endian (Kafka's ``Serdes.Double()``)."""
        return _DOUBLE

    @staticmethod
    def json() -> Serde:
        """UTF-8 JSON, compact separators."""
        return _JSON

    @staticmethod
    def from_fns(ser: Callable[[Any], bytes], de: Callable[[bytes], Any], name: str = "custom") -> Serde:
        """A serde from two functions (Kafka's ``Serdes.serdeFrom(serializer, deserializer)``)."""
        return Serde(ser, de, name)


def serde_or(serde: Optional[Serde], default: Serde) -> Serde:
    return default if serde is None else serde
