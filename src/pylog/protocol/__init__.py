"""Kafka's wire protocol: declarations of every message pylog speaks, and one codec.

Layout
    ``schema``      the declaration types (Message, Field, VersionRange)
    ``schemas``     generated declarations, one module per API (tools/gen_schemas.py)
    ``apis``        API keys, supported versions, header-version rules
    ``messages``    generated ``__slots__`` classes: ``messages.ProduceRequest`` ...
    ``codec``       frames, headers, decode/encode of requests and responses
    ``replies``     ApiVersions and error responses a server builds without a handler
    ``segments``    FileRegion and the segment lists encoders return (sendfile-ready)

The hot path (message bodies) runs in the Cython module :mod:`pylog._protocol`.

Example::

    from pylog import protocol
    from pylog.protocol import messages as m

    header, request = protocol.decode_request(frame)        # frame: bytes after the size
    response = m.ApiVersionsResponse(api_keys=[...])
    segments = protocol.encode_response(header.api_key, header.api_version,
                                        header.correlation_id, response)
"""

from pylog.protocol import messages
from pylog.protocol._errors import (
    MalformedMessageError,
    MessageEncodeError,
    ProtocolError,
    UnsupportedRequestError,
)
from pylog.protocol.apis import (
    MAX_FRAME_SIZE,
    ApiKey,
    api_name,
    is_supported,
    request_header_version,
    response_header_version,
    supported_versions,
)
from pylog.protocol.codec import (
    RequestHeader,
    decode_request,
    decode_request_body,
    decode_request_header,
    decode_response,
    decode_response_body,
    encode_request,
    encode_request_body,
    encode_response,
    encode_response_body,
    frame_size,
    peek_correlation_id,
    precompile,
)
from pylog.protocol.replies import api_versions_response, error_response, set_error_codes
from pylog.protocol.segments import FileRegion, Segment, segments_size, segments_to_bytes

__all__ = [
    "ApiKey",
    "FileRegion",
    "MAX_FRAME_SIZE",
    "MalformedMessageError",
    "MessageEncodeError",
    "ProtocolError",
    "RequestHeader",
    "Segment",
    "UnsupportedRequestError",
    "api_name",
    "api_versions_response",
    "decode_request",
    "decode_request_body",
    "decode_request_header",
    "decode_response",
    "decode_response_body",
    "encode_request",
    "encode_request_body",
    "encode_response",
    "encode_response_body",
    "error_response",
    "frame_size",
    "is_supported",
    "messages",
    "peek_correlation_id",
    "precompile",
    "request_header_version",
    "response_header_version",
    "segments_size",
    "segments_to_bytes",
    "set_error_codes",
    "supported_versions",
]
