"""Responses a server can build without a handler: ApiVersions and error responses.

Thread-safe: every call builds new objects.
"""

from __future__ import annotations

from pylog.protocol._errors import UnsupportedRequestError
from pylog.protocol.apis import ApiKey, api_name, is_supported, supported_versions
from pylog.protocol.codec import RequestHeader, encode_response
from pylog.protocol.messages import Data, message_class
from pylog.protocol.segments import Segment

__all__ = ["api_versions_response", "error_response", "set_error_codes"]

def api_versions_response(*, error_code: int = 0, throttle_time_ms: int = 0,
                          versions: dict[int, tuple[int, int]] | None = None) -> Data:
    """An ApiVersionsResponse advertising ``versions`` (default: every API and version
    pylog speaks, from :func:`supported_versions`), ascending by API key.  The server may
    pass a narrower table (only the APIs it has handlers for)."""
    cls = message_class(ApiKey.API_VERSIONS, "response")
    table = supported_versions() if versions is None else versions
    return cls(error_code=error_code, throttle_time_ms=throttle_time_ms, api_keys=[
        cls.ApiVersion(api_key=k, min_version=lo, max_version=hi)
        for k, (lo, hi) in sorted(table.items())])


def set_error_codes(body: Data, error_code: int, version: int | None = None) -> Data:
    """Set every error-code field in ``body`` (``error_code`` and ``*_error_code`` int16
    fields, at every level and in every array element present) to ``error_code``; with
    ``version``, only the fields that version has.  Returns ``body``."""
    for f in type(body)._decl.fields:
        if version is not None and version not in f.versions:
            continue
        if f.type == "int16" and (f.name == "error_code" or f.name.endswith("_error_code")):
            setattr(body, f.name, error_code)
        elif f.is_struct:
            value = getattr(body, f.name)
            if isinstance(value, list):
                for item in value:
                    set_error_codes(item, error_code, version)
            elif value is not None:
                set_error_codes(value, error_code, version)
    return body


def error_response(api_key: int, api_version: int, correlation_id: int, error_code: int,
                   *, body: Data | None = None) -> list[Segment]:
    """A complete, framed response carrying ``error_code`` for a request pylog cannot serve.

    ApiVersions is special (KIP-511): a request of a version pylog does not speak is
    answered with a v0 response (header v0) whose ``api_keys`` holds the ApiVersions
    range pylog speaks, so the client can retry with a version both sides know.

    For other APIs the body is the message's defaults (empty arrays) with the error code
    in every error field present; pass ``body`` to start from a response that already
    lists the request's topics and partitions (every error field in it is set).

    Raises
    ------
    UnsupportedRequestError
        For an API key pylog does not speak, or (other than ApiVersions) a version it
        does not speak: no valid body can be built; Kafka closes the connection.
    """
    if api_key == ApiKey.API_VERSIONS:
        if not is_supported(api_key, api_version):
            lo, hi = supported_versions()[ApiKey.API_VERSIONS]
            resp = api_versions_response(error_code=error_code,
                                         versions={ApiKey.API_VERSIONS: (lo, hi)})
            return encode_response(api_key, 0, correlation_id, resp)
        resp = body if body is not None else api_versions_response(
            error_code=error_code, versions={})
        resp.error_code = error_code
        return encode_response(api_key, api_version, correlation_id, resp)
    if not is_supported(api_key, api_version):
        raise UnsupportedRequestError(
            f"cannot build a {api_name(api_key)} v{api_version} response: pylog does not "
            "speak that API version", header=RequestHeader(api_key, api_version, correlation_id))
    if body is None:
        body = message_class(api_key, "response")()
    set_error_codes(body, error_code, api_version)
    return encode_response(api_key, api_version, correlation_id, body)

