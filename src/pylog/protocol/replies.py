"""Responses a server can build without a handler: ApiVersions and error responses.

Error responses list what the request asked about
    As Kafka's broker does, an error response to a request that names topics,
    partitions, groups or config resources lists each of them with the error code
    (:func:`error_body` with ``request=``): a client looks for its partitions in a
    Produce or Fetch response and would otherwise find none, and retry or fail nothing.
    Offsets and other values of such entries are Kafka's "unknown" values (-1), record
    sets are empty.

Thread-safe: every call builds new objects.
"""

from __future__ import annotations

from pylog.protocol._errors import UnsupportedRequestError
from pylog.protocol.apis import ApiKey, api_name, is_supported, supported_versions
from pylog.protocol.codec import RequestHeader, encode_response
from pylog.protocol.messages import Data, message_class
from pylog.protocol.segments import Segment

__all__ = ["api_versions_response", "error_body", "error_response", "set_error_codes"]


class _Mirror:
    """How one array of a request maps to an array of its response: ``keys`` are
    (request attribute, response attribute) pairs copied per element, or, for an array
    of plain values (topic names, partition indexes), the one response attribute the
    value goes to; ``values`` are set on every response element; ``child`` maps an
    array inside the elements."""

    __slots__ = ("request", "response", "keys", "values", "child")

    def __init__(self, request: str, response: str, keys: tuple | str,
                 values: dict | None = None, child: "_Mirror | None" = None) -> None:
        self.request = request
        self.response = response
        self.keys = keys
        self.values = values or {}
        self.child = child


_NAME = (("name", "name"),)
_UNKNOWN_PARTITION = {"base_offset": -1}   # Produce: INVALID_OFFSET

#: API key -> what an error response copies from the request (Kafka's getErrorResponse
#: of each request type: the request's entities, each with the error code).
_MIRRORS: dict[int, tuple[_Mirror, ...]] = {
    ApiKey.PRODUCE: (_Mirror("topic_data", "responses", _NAME, child=_Mirror(
        "partition_data", "partition_responses", (("index", "index"),), _UNKNOWN_PARTITION)),),
    ApiKey.FETCH: (_Mirror("topics", "responses", (("topic", "topic"), ("topic_id", "topic_id")), child=_Mirror(
        "partitions", "partitions", (("partition", "partition_index"),),
        {"high_watermark": -1, "last_stable_offset": -1, "log_start_offset": -1, "records": b""})),),
    ApiKey.LIST_OFFSETS: (_Mirror("topics", "topics", _NAME, child=_Mirror(
        "partitions", "partitions", (("partition_index", "partition_index"),),
        {"timestamp": -1, "offset": -1})),),
    ApiKey.METADATA: (_Mirror("topics", "topics", (("name", "name"), ("topic_id", "topic_id"))),),
    ApiKey.OFFSET_COMMIT: (_Mirror("topics", "topics", _NAME, child=_Mirror(
        "partitions", "partitions", (("partition_index", "partition_index"),))),),
    ApiKey.OFFSET_FETCH: (
        _Mirror("topics", "topics", _NAME, child=_Mirror(
            "partition_indexes", "partitions", "partition_index", {"committed_offset": -1})),
        _Mirror("groups", "groups", (("group_id", "group_id"),), child=_Mirror(
            "topics", "topics", _NAME, child=_Mirror(
                "partition_indexes", "partitions", "partition_index", {"committed_offset": -1})))),
    ApiKey.FIND_COORDINATOR: (_Mirror("coordinator_keys", "coordinators", "key",
                                      {"node_id": -1, "host": "", "port": -1}),),
    ApiKey.LEAVE_GROUP: (_Mirror("members", "members", (("member_id", "member_id"),
                                                        ("group_instance_id", "group_instance_id"))),),
    ApiKey.DESCRIBE_GROUPS: (_Mirror("groups", "groups", "group_id"),),
    ApiKey.CREATE_TOPICS: (_Mirror("topics", "topics", _NAME,
                                   {"num_partitions": -1, "replication_factor": -1}),),
    ApiKey.DELETE_TOPICS: (_Mirror("topic_names", "responses", "name"),),
    ApiKey.DELETE_RECORDS: (_Mirror("topics", "topics", _NAME, child=_Mirror(
        "partitions", "partitions", (("partition_index", "partition_index"),), {"low_watermark": -1})),),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: (_Mirror("topics", "topics", (("topic", "topic"),), child=_Mirror(
        "partitions", "partitions", (("partition", "partition"),), {"leader_epoch": -1, "end_offset": -1})),),
    ApiKey.DESCRIBE_CONFIGS: (_Mirror("resources", "results", (("resource_type", "resource_type"),
                                                               ("resource_name", "resource_name"))),),
    ApiKey.ALTER_CONFIGS: (_Mirror("resources", "responses", (("resource_type", "resource_type"),
                                                              ("resource_name", "resource_name"))),),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (_Mirror("resources", "responses", (("resource_type", "resource_type"),
                                                                          ("resource_name", "resource_name"))),),
    ApiKey.CREATE_PARTITIONS: (_Mirror("topics", "results", _NAME),),
    ApiKey.DELETE_GROUPS: (_Mirror("groups_names", "results", "group_id"),),
    ApiKey.OFFSET_DELETE: (_Mirror("topics", "topics", _NAME, child=_Mirror(
        "partitions", "partitions", (("partition_index", "partition_index"),))),),
}

#: Top-level values of an error response besides its error codes (FindCoordinator v0-3
#: names no coordinator: Kafka's "no node", -1).
_TOP_VALUES: dict[int, dict] = {
    ApiKey.FIND_COORDINATOR: {"node_id": -1, "host": "", "port": -1},
}


def _field_table(cls: type, attribute: str) -> dict:
    """``{field name: getattr(field, attribute)}`` of a message class's declared fields,
    built once per class and kept on it."""
    key = f"_pylog_{attribute}"
    table = cls.__dict__.get(key)
    if table is None:
        table = {f.name: getattr(f, attribute) for f in cls._decl.fields}
        setattr(cls, key, table)
    return table


def _versions(cls: type) -> dict:
    return _field_table(cls, "versions")


def _nullable(cls: type) -> dict:
    return _field_table(cls, "nullable")


def _set_present(obj: Data, values: dict, version: int) -> None:
    have = _versions(type(obj))
    for name, value in values.items():
        versions = have.get(name)
        if versions is not None and version in versions:
            setattr(obj, name, value)


def _mirror(request: Data, response: Data, spec: _Mirror, version: int) -> None:
    versions = _versions(type(response)).get(spec.response)
    if versions is None or version not in versions:
        return
    req_versions = _versions(type(request)).get(spec.request)
    if req_versions is None or version not in req_versions:
        return
    items = getattr(request, spec.request)
    if items is None:
        return
    elem_cls = type(response)._children[spec.response]
    have = _versions(elem_cls)
    nullable = _nullable(elem_cls)
    req_have = None
    out = []
    for item in items:
        elem = elem_cls()
        if isinstance(spec.keys, str):
            setattr(elem, spec.keys, item)
        else:
            if req_have is None:
                req_have = _versions(type(item))
            for src, dst in spec.keys:
                s_versions, d_versions = req_have.get(src), have.get(dst)
                if (s_versions is not None and version in s_versions
                        and d_versions is not None and version in d_versions):
                    value = getattr(item, src)
                    # A null the response cannot carry (Metadata v10-11 asks by topic
                    # id with a null name; the answer's name is not nullable before
                    # v12) keeps the field's default.
                    if value is not None or version in nullable[dst]:
                        setattr(elem, dst, value)
        _set_present(elem, spec.values, version)
        if spec.child is not None:
            _mirror(item, elem, spec.child, version)
        out.append(elem)
    setattr(response, spec.response, out)


def error_body(api_key: int, api_version: int, error_code: int, request: Data | None = None) -> Data:
    """A response body of ``api_key``/``api_version`` carrying ``error_code`` in every
    error field it has, at every level.

    With ``request`` (the decoded request being answered), the entities it names -- its
    topics and partitions, groups, coordinator keys or config resources -- are listed
    with the error code and Kafka's unknown values (offsets -1, empty records), as
    Kafka's broker answers a request it fails as a whole.  Without it, or for an API
    whose response lists nothing per entity, only top-level error fields are set.
    Only fields ``api_version`` has are set, so the body always encodes.

    Raises
    ------
    KeyError
        If pylog does not speak ``api_key``.
    """
    cls = message_class(api_key, "response")
    body = cls()
    if request is not None:
        for spec in _MIRRORS.get(api_key, ()):
            _mirror(request, body, spec, api_version)
    top = _TOP_VALUES.get(api_key)
    if top:
        _set_present(body, top, api_version)
    return set_error_codes(body, error_code, api_version)

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
                   *, body: Data | None = None, request: Data | None = None) -> list[Segment]:
    """A complete, framed response carrying ``error_code`` for a request pylog cannot serve.

    ApiVersions is special (KIP-511): a request of a version pylog does not speak is
    answered with a v0 response (header v0) whose ``api_keys`` holds the ApiVersions
    range pylog speaks, so the client can retry with a version both sides know.

    For other APIs the body is :func:`error_body`: with ``request`` (the decoded request),
    it lists the request's topics and partitions (groups, resources) each with the error
    code; without, only the top-level error fields are set.  Or pass ``body`` to start
    from a response of your own (every error field in it is set).

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
        body = error_body(api_key, api_version, error_code, request)
    else:
        set_error_codes(body, error_code, api_version)
    return encode_response(api_key, api_version, correlation_id, body)

