"""Kafka wire-protocol codec: frames, request and response headers, message bodies.

Wire format
    Every message travels in a frame: an int32 size (big-endian, the number of bytes that
    follow) and then the header and body.  The functions here take and return *frames
    without their size prefix* when decoding (the server has read the prefix to know how
    much to read; :func:`frame_size` checks it) and *with* the prefix when encoding.

Request header
    v0: api_key int16, api_version int16, correlation_id int32.  v1 adds client_id, a
    nullable string with an int16 length; it stays non-compact in v2 so any broker can read
    the header of any ApiVersions request.  v2 adds a tagged-field section.  A request uses
    v2 when its API version is flexible, else v1 (v0 only served ControlledShutdown v0,
    which pylog does not speak).

Response header
    v0: correlation_id int32.  v1 adds a tagged-field section; flexible versions use v1,
    except ApiVersions, whose responses always use v0 (KIP-511).

Decoded message bodies are instances of the classes in :mod:`pylog.protocol.messages`
(``__slots__`` objects with attribute access: the fastest clean option measured, and they
catch misspelt field names).  Encoders accept those instances or plain mappings
(converted with ``from_dict``).  Decoding is zero-copy for ``records`` fields, which come
back as ``memoryview`` slices of the frame when the frame is ``bytes``.  Any other buffer
is copied into ``bytes`` first, because a reused buffer under a live view would corrupt
decoded records, unless the caller passes ``copy=False`` and so promises not to change
the buffer while the records are in use (a server receiving each large request into a
buffer of its own does).

Trailing bytes
    A request body must fill its frame exactly: bytes after it are a
    :class:`MalformedMessageError` ("N bytes left after the message"), which is what
    tests and fuzzing want.  Kafka's broker reads a request and ignores what follows it,
    and some clients rely on that (librdkafka 2.x sends three stray bytes after an
    all-topics Metadata v12 request), so the request decoders take
    ``allow_trailing=True`` (ignore any number of bytes after the body) or
    ``allow_trailing=N`` (ignore at most N).  Either way nothing past the end of the
    frame is read, and anything malformed *inside* the body still raises.

All functions are thread-safe: codec plans are built once per (API, version) under a
lock and are immutable.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Mapping

from pylog import _protocol as _c
from pylog.protocol._plan import build_plan, read_uvarint, skip_tags
from pylog.protocol._errors import (
    MalformedMessageError,
    MessageEncodeError,
    ProtocolError,
    UnsupportedRequestError,
)
from pylog.protocol.apis import (
    MAX_FRAME_SIZE,
    _REQUESTS,
    _RESPONSES,
    api_name,
    is_supported,
    request_header_version,
    response_header_version,
    supported_versions,
)
from pylog.protocol.messages import Data, class_for
from pylog.protocol.schema import Message
from pylog.protocol.schemas import APIS
from pylog.protocol.segments import Segment

__all__ = [
    "RequestHeader",
    "frame_size",
    "decode_request_header",
    "decode_request",
    "decode_request_body",
    "decode_response",
    "decode_response_body",
    "encode_request",
    "encode_request_body",
    "encode_response",
    "encode_response_body",
    "peek_correlation_id",
    "precompile",
]

_decode = _c.decode
_encode = _c.encode
_read_request_header = _c.read_request_header
#: API key -> first flexible request version (header v2 from there on).
_FLEXIBLE_FROM = {k: api[5] for k, api in APIS.items() if api[5] is not None}

_I32 = struct.Struct(">i")
_REQ_FIXED = struct.Struct(">hhi")
_I16 = struct.Struct(">h")

_LOCK = threading.Lock()
#: (kind, api key, version) -> codec plan, built on first use.
_PLANS: dict[tuple[str, int, int], Any] = {}


class RequestHeader:
    """A decoded request header.

    Attributes
    ----------
    api_key, api_version, correlation_id : int
    client_id : str or None
    header_version : int
        1 or 2 (2 = with a tagged-field section); for an API key pylog does not know, 1,
        since whether tags follow cannot be known.
    """

    __slots__ = ("api_key", "api_version", "correlation_id", "client_id", "header_version")

    def __init__(self, api_key: int, api_version: int, correlation_id: int,
                 client_id: str | None = None, header_version: int = 1) -> None:
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id
        self.client_id = client_id
        self.header_version = header_version

    def __eq__(self, other: object) -> bool:
        if type(other) is not RequestHeader:
            return NotImplemented
        return (self.api_key, self.api_version, self.correlation_id, self.client_id,
                self.header_version) == (other.api_key, other.api_version,
                                         other.correlation_id, other.client_id,
                                         other.header_version)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"RequestHeader(api_key={self.api_key} ({api_name(self.api_key)}), "
                f"api_version={self.api_version}, correlation_id={self.correlation_id}, "
                f"client_id={self.client_id!r}, header_version={self.header_version})")


# --------------------------------------------------------------------------------------
# Codec cache
# --------------------------------------------------------------------------------------


def _schema(kind: str, api_key: int) -> Message:
    table = _REQUESTS if kind == "request" else _RESPONSES
    m = table.get(api_key)
    if m is None:
        raise UnsupportedRequestError(
            f"pylog does not speak API key {api_key} ({api_name(api_key)})",
            header=RequestHeader(api_key, -1, -1))
    return m


def _unsupported(kind: str, api_key: int, version: int) -> UnsupportedRequestError:
    lo_hi = supported_versions().get(api_key)
    if lo_hi is None:
        why = f"pylog does not speak API key {api_key} ({api_name(api_key)})"
    else:
        why = (f"{api_name(api_key)} {kind} v{version} is not supported "
               f"(pylog speaks v{lo_hi[0]}-v{lo_hi[1]})")
    return UnsupportedRequestError(why, header=RequestHeader(api_key, version, -1))


def _plan(kind: str, api_key: int, version: int) -> Any:
    key = (kind, api_key, version)
    plan = _PLANS.get(key)
    if plan is None:
        if not is_supported(api_key, version):
            raise _unsupported(kind, api_key, version)
        with _LOCK:
            plan = _PLANS.get(key)
            if plan is None:
                plan = build_plan(_schema(kind, api_key), version)
                _PLANS[key] = plan
    return plan


def precompile(api_keys: Any = None) -> int:
    """Build the codec plans of every supported version now (of ``api_keys``, default
    all), so the first request of each kind does not pay for it.  Returns how many."""
    count = 0
    for key, (lo, hi) in supported_versions().items():
        if api_keys is not None and key not in api_keys:
            continue
        for v in range(lo, hi + 1):
            for kind in ("request", "response"):
                _plan(kind, key, v)
                count += 1
    return count


def _as_bytes(buf: Any) -> bytes:
    if type(buf) is bytes:
        return buf
    try:
        return bytes(buf)
    except TypeError:
        raise TypeError(f"expected a bytes-like object, got {type(buf).__name__}") from None


def _trailing_limit(allow_trailing: bool | int) -> int:
    """``allow_trailing`` as the decoder's ``max_trailing`` (0 strict, -1 any number)."""
    if allow_trailing is True:
        return -1
    if allow_trailing is False or allow_trailing is None:
        return 0
    if type(allow_trailing) is int and allow_trailing >= 0:
        return allow_trailing
    raise ValueError(f"allow_trailing must be a bool or an int >= 0, not {allow_trailing!r}")


def _coerce(kind: str, api_key: int, body: Any) -> Data:
    cls = class_for(_schema(kind, api_key))
    if type(body) is cls:
        return body
    if isinstance(body, Mapping):
        return cls.from_dict(body)
    raise MessageEncodeError(
        f"expected a {cls.__qualname__} or a mapping as the {api_name(api_key)} {kind} body, "
        f"got {type(body).__name__}", api_key=api_key)


# --------------------------------------------------------------------------------------
# Frames and headers
# --------------------------------------------------------------------------------------


def frame_size(prefix: bytes | bytearray | memoryview, max_size: int = MAX_FRAME_SIZE) -> int:
    """Validate and return the size announced by a frame's 4-byte prefix.

    Raises
    ------
    MalformedMessageError
        If the prefix is shorter than 4 bytes, or the size is negative or above
        ``max_size`` (Kafka's ``socket.request.max.bytes``, 100 MiB by default): a server
        must not allocate a buffer for it.
    """
    if len(prefix) < 4:
        raise MalformedMessageError(f"a frame size prefix needs 4 bytes, got {len(prefix)}")
    (size,) = _I32.unpack_from(prefix, 0)
    if size < 0 or size > max_size:
        raise MalformedMessageError(
            f"frame size {size} is outside [0, {max_size}]; raise max_size "
            "(socket.request.max.bytes) if larger requests are legitimate")
    return size


def decode_request_header(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, int]:
    """Decode the header of a request frame (without its size prefix).

    Succeeds for API keys and versions pylog does not speak, so the server can still
    answer (UNSUPPORTED_VERSION for ApiVersions, see :func:`error_response`).  Any
    bytes-like ``frame`` is read in place (the header keeps no reference to it).

    Returns
    -------
    (RequestHeader, int)
        The header and the offset of the body in ``frame``.

    Raises
    ------
    MalformedMessageError
        If the header itself is truncated or malformed.
    """
    try:
        key, version, correlation_id, client_id, hv, pos = _read_request_header(frame, _FLEXIBLE_FROM)
    except (TypeError, BufferError):
        raise TypeError(f"expected a bytes-like object, got {type(frame).__name__}") from None
    return RequestHeader(key, version, correlation_id, client_id, hv), pos


def decode_request(frame: bytes | bytearray | memoryview, *, copy: bool = True,
                   allow_trailing: bool | int = False) -> tuple[RequestHeader, Data]:
    """Decode a whole request frame (without its size prefix) into (header, body).

    ``copy`` and ``allow_trailing`` are as for :func:`decode_request_body`.

    Raises
    ------
    UnsupportedRequestError
        The API key or version is not one pylog speaks; ``exc.header`` holds the header.
    MalformedMessageError
        The header or body does not fit the schema, or bytes follow the body (more
        than ``allow_trailing`` permits); ``exc.header`` holds the header when it was
        decoded.
    """
    max_trailing = _trailing_limit(allow_trailing)
    if copy and type(frame) is not bytes:
        frame = _as_bytes(frame)
    header, pos = decode_request_header(frame)
    plan = _PLANS.get(("request", header.api_key, header.api_version))
    if plan is None:
        try:
            plan = _plan("request", header.api_key, header.api_version)
        except UnsupportedRequestError as exc:
            exc.header = header
            raise
    try:
        body = _decode(plan, frame, pos, max_trailing)
    except ProtocolError as exc:
        exc.header = header
        raise
    return header, body


def _decode_body(kind: str, api_key: int, version: int, buf: Any, offset: int,
                 copy: bool = True, max_trailing: int = 0) -> Data:
    plan = _PLANS.get((kind, api_key, version))
    if plan is None:
        plan = _plan(kind, api_key, version)
    if copy and type(buf) is not bytes:
        buf = _as_bytes(buf)
    return _decode(plan, buf, offset, max_trailing)


def decode_request_body(api_key: int, api_version: int, buf: bytes | bytearray | memoryview,
                        offset: int = 0, *, copy: bool = True,
                        allow_trailing: bool | int = False) -> Data:
    """Decode a request body that runs from ``offset`` to the end of ``buf``.

    Parameters
    ----------
    copy : bool
        True (default): a ``buf`` that is not ``bytes`` is copied first, so decoded
        records never see later changes to it.  False: any bytes-like ``buf`` is
        decoded in place and records are views of it; the caller must leave it unchanged
        while they are in use.
    allow_trailing : bool or int
        False (default): bytes after the body are an error.  True: any number of them
        is ignored; an int N: at most N are.  Nothing past the end of ``buf`` is read.

    Raises
    ------
    MalformedMessageError
        The body does not fit the schema, or more bytes follow it than allowed.
    UnsupportedRequestError
        pylog does not speak this API version.
    """
    return _decode_body("request", api_key, api_version, buf, offset, copy,
                        _trailing_limit(allow_trailing))


def decode_response_body(api_key: int, api_version: int, buf: bytes | bytearray | memoryview,
                         offset: int = 0, *, copy: bool = True) -> Data:
    """Decode a response body that runs from ``offset`` to the end of ``buf`` (``copy``
    as for :func:`decode_request_body`)."""
    return _decode_body("response", api_key, api_version, buf, offset, copy)


def peek_correlation_id(frame: bytes | bytearray | memoryview) -> int:
    """The correlation id of a response frame (without size prefix): its first 4 bytes,
    in every response header version.  A client uses it to find the request (and so the
    API key and version) a response answers."""
    if len(frame) < 4:
        raise MalformedMessageError(f"response header needs 4 bytes, got {len(frame)}")
    return _I32.unpack_from(frame, 0)[0]


def decode_response(api_key: int, api_version: int,
                    frame: bytes | bytearray | memoryview) -> tuple[int, Data]:
    """Decode a response frame (without size prefix) of a request made with
    ``api_key``/``api_version``; returns (correlation_id, body)."""
    frame = _as_bytes(frame)
    correlation_id = peek_correlation_id(frame)
    pos = 4
    if response_header_version(api_key, api_version) >= 1:
        if pos >= len(frame):
            raise MalformedMessageError("response header v1: missing tagged-field section",
                                        api_key=api_key, api_version=api_version)
        count, pos = read_uvarint(frame, pos)
        if count:
            pos = skip_tags(frame, pos, count)
    return correlation_id, _decode_body("response", api_key, api_version, frame, pos)


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------


def encode_request(api_key: int, api_version: int, correlation_id: int,
                   client_id: str | None, body: Any) -> list[Segment]:
    """Encode a request frame: size prefix, header (v1 or v2 by the flexible rule), body.

    Parameters
    ----------
    body : message instance or mapping
        A ``messages.<Api>Request`` (or a mapping accepted by its ``from_dict``).

    Returns
    -------
    list of segments
        ``bytearray`` chunks, and the records objects (or :class:`FileRegion` s) of
        records fields of 4 KiB or more, in wire order; ``b"".join(...)`` when no
        FileRegion is present.

    Raises
    ------
    UnsupportedRequestError
        pylog does not speak this API/version.
    MessageEncodeError
        A value does not fit its field (the message names the field).
    """
    plan = _PLANS.get(("request", api_key, api_version))
    if plan is None:
        plan = _plan("request", api_key, api_version)
    if type(body) is not plan.cls:
        body = _coerce("request", api_key, body)
    try:
        prefix = _REQ_FIXED.pack(api_key, api_version, correlation_id)
    except struct.error as exc:
        raise MessageEncodeError(f"request header: {exc}", api_key=api_key,
                                 api_version=api_version) from None
    if client_id is None:
        prefix += b"\xff\xff"
    else:
        raw = client_id.encode()
        if len(raw) > 0x7FFF:
            raise MessageEncodeError("client_id is longer than 32767 UTF-8 bytes",
                                     api_key=api_key, api_version=api_version)
        prefix += _I16.pack(len(raw)) + raw
    if request_header_version(api_key, api_version) >= 2:
        prefix += b"\x00"
    return _encode(plan, body, prefix, True)


def encode_response(api_key: int, api_version: int, correlation_id: int,
                    body: Any) -> list[Segment]:
    """Encode a response frame: size prefix, header (v0, or v1 for flexible versions except
    ApiVersions), body.  Returns segments as :func:`encode_request` does; a Fetch response
    whose records are :class:`FileRegion` s comes back with those regions in place, ready
    for ``os.sendfile``."""
    plan = _PLANS.get(("response", api_key, api_version))
    if plan is None:
        plan = _plan("response", api_key, api_version)
    if type(body) is not plan.cls:
        body = _coerce("response", api_key, body)
    try:
        prefix = _I32.pack(correlation_id)
    except struct.error as exc:
        raise MessageEncodeError(f"response header: {exc}", api_key=api_key,
                                 api_version=api_version) from None
    if response_header_version(api_key, api_version) >= 1:
        prefix += b"\x00"
    return _encode(plan, body, prefix, True)


def _encode_body(kind: str, api_key: int, version: int, body: Any) -> list[Segment]:
    plan = _PLANS.get((kind, api_key, version))
    if plan is None:
        plan = _plan(kind, api_key, version)
    if type(body) is not plan.cls:
        body = _coerce(kind, api_key, body)
    return _encode(plan, body, b"", False)


def encode_request_body(api_key: int, api_version: int, body: Any) -> list[Segment]:
    """Encode only a request body (no header, no size prefix), as segments."""
    return _encode_body("request", api_key, api_version, body)


def encode_response_body(api_key: int, api_version: int, body: Any) -> list[Segment]:
    """Encode only a response body (no header, no size prefix), as segments."""
    return _encode_body("response", api_key, api_version, body)

