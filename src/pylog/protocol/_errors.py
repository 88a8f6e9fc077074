"""Errors raised by the protocol codec: subclasses of :mod:`pylog.errors` classes that also
say which API and version they concern, so a server can log them and answer (or close the
connection) without parsing the message text."""

from __future__ import annotations

from pylog.errors import InvalidRequestError, UnsupportedVersionError

__all__ = ["ProtocolError", "MalformedMessageError", "MessageEncodeError",
           "UnsupportedRequestError"]


class ProtocolError(InvalidRequestError):
    """A message does not fit its schema (Kafka's INVALID_REQUEST, code 42).

    Attributes
    ----------
    api_key, api_version : int or None
        The message's API key and version, when known.
    header : RequestHeader or None
        The decoded request header, when the failure happened after it was read (a
        server can use ``header.correlation_id`` in its log line).
    """

    def __init__(self, message: str, *, api_key: int | None = None,
                 api_version: int | None = None, header=None) -> None:
        super().__init__(message)
        self.api_key = api_key
        self.api_version = api_version
        self.header = header


class MalformedMessageError(ProtocolError):
    """Bytes that cannot be a valid message of the given API and version: truncated, a
    length or count larger than the bytes left, a negative length for a non-nullable
    field, an over-long varint, invalid UTF-8, or bytes left over after the message."""


class MessageEncodeError(ProtocolError):
    """A Python value cannot be encoded: wrong type, out of the field's integer range,
    a string longer than the length prefix allows, or a non-ignorable field holding a
    non-default value in a version that lacks it.  The message names the field path."""


class UnsupportedRequestError(UnsupportedVersionError):
    """A request whose API key or version pylog does not speak (UNSUPPORTED_VERSION, 35).

    The header was decoded, so the server can answer: for ApiVersions with a v0 body
    (:func:`pylog.protocol.error_response`), for other APIs by closing the connection as
    Kafka does.

    Attributes
    ----------
    header : RequestHeader
    api_key, api_version : int
    """

    def __init__(self, message: str, *, header) -> None:
        super().__init__(message)
        self.header = header
        self.api_key = header.api_key
        self.api_version = header.api_version
