"""API keys, the versions pylog speaks, and which header version each request uses.

Everything here is a constant table built at import, but for the declarations of
each API (:func:`request_schema`, :func:`response_schema`), which are imported on the
API's first use (Python's import lock makes that safe from any thread): a server does not
build those of APIs nobody has called before it listens (#17).  Safe to use from any
thread.
"""

from __future__ import annotations

import importlib
from enum import IntEnum
from typing import Iterator

from pylog.protocol.schema import Message
from pylog.protocol.schemas import APIS, KAFKA_API_NAMES

__all__ = [
    "ApiKey",
    "KAFKA_API_NAMES",
    "api_name",
    "request_schema",
    "response_schema",
    "supported_versions",
    "is_supported",
    "request_header_version",
    "response_header_version",
    "MAX_FRAME_SIZE",
]

#: Largest frame (size prefix value) accepted by default: Kafka's
#: ``socket.request.max.bytes`` default, 100 MiB.
MAX_FRAME_SIZE = 104857600


class ApiKey(IntEnum):
    """The APIs pylog speaks, by Kafka's API key."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    LEADER_AND_ISR = 4
    STOP_REPLICA = 5
    UPDATE_METADATA = 6
    CONTROLLED_SHUTDOWN = 7
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    WRITE_TXN_MARKERS = 27
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    DESCRIBE_LOG_DIRS = 35
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    ELECT_LEADERS = 43
    INCREMENTAL_ALTER_CONFIGS = 44
    ALTER_PARTITION_REASSIGNMENTS = 45
    LIST_PARTITION_REASSIGNMENTS = 46
    OFFSET_DELETE = 47
    ALTER_PARTITION = 56
    DESCRIBE_CLUSTER = 60
    DESCRIBE_PRODUCERS = 61
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66


if set(ApiKey) != set(APIS):  # the enum and the generated registry must agree
    raise ImportError("pylog.protocol: ApiKey and the generated schemas disagree: "
                      f"{sorted(set(ApiKey) ^ set(APIS))}")


class _Declarations:
    """API key -> the request (or response) declaration of the APIs pylog speaks, the
    API's schema module imported on first use.  Read-only; safe from any thread (the
    import lock serialises a first import, and a module imported twice is the same)."""

    __slots__ = ("_attr", "_loaded")

    def __init__(self, attr: str) -> None:
        self._attr = attr
        self._loaded: dict[int, Message] = {}

    def __getitem__(self, api_key: int) -> Message:
        message = self._loaded.get(api_key)
        if message is None:
            module = importlib.import_module(f"pylog.protocol.schemas.{APIS[api_key][0]}")
            message = self._loaded[api_key] = getattr(module, self._attr)
        return message

    def get(self, api_key: int, default: Message | None = None) -> Message | None:
        return self[api_key] if api_key in APIS else default

    def __contains__(self, api_key: object) -> bool:
        return api_key in APIS

    def __iter__(self) -> Iterator[int]:
        return iter(APIS)

    def __len__(self) -> int:
        return len(APIS)

    def keys(self) -> Iterator[int]:
        return iter(APIS)

    def values(self) -> Iterator[Message]:
        """Every declaration (imports every API's module)."""
        return (self[k] for k in APIS)

    def items(self) -> Iterator[tuple[int, Message]]:
        """(API key, declaration) of every API (imports every API's module)."""
        return ((k, self[k]) for k in APIS)


_REQUESTS = _Declarations("REQUEST")
_RESPONSES = _Declarations("RESPONSE")
_VERSIONS: dict[int, tuple[int, int]] = {k: (api[3], api[4]) for k, api in sorted(APIS.items())}


def api_name(api_key: int) -> str:
    """Kafka's name of an API (``"Produce"``), or ``"Unknown(<key>)"``."""
    name = KAFKA_API_NAMES.get(api_key)
    return name if name is not None else f"Unknown({api_key})"


def request_schema(api_key: int) -> Message:
    """The request declaration of ``api_key``; KeyError if pylog does not speak it."""
    return _REQUESTS[api_key]


def response_schema(api_key: int) -> Message:
    """The response declaration of ``api_key``; KeyError if pylog does not speak it."""
    return _RESPONSES[api_key]


def supported_versions() -> dict[int, tuple[int, int]]:
    """API key -> (min version, max version) pylog speaks, ascending by key: the table an
    ApiVersions response advertises.  A new dict on every call."""
    return dict(_VERSIONS)


def is_supported(api_key: int, api_version: int) -> bool:
    """True when pylog can decode and encode ``api_key`` at ``api_version``."""
    r = _VERSIONS.get(api_key)
    return r is not None and r[0] <= api_version <= r[1]


def request_header_version(api_key: int, api_version: int) -> int:
    """Request header version of a request: 2 (with tagged fields) when the request
    version is flexible, else 1.  Defined for every version of a known API, supported or
    not, because the flexible rule is open-ended; unknown API keys get 1."""
    schema = _REQUESTS.get(api_key)
    if schema is not None and schema.is_flexible(api_version):
        return 2
    return 1


def response_header_version(api_key: int, api_version: int) -> int:
    """Response header version: 1 (with tagged fields) for flexible versions, else 0.

    ApiVersions responses always use header v0: a client that does not yet know the
    broker's versions must be able to read the correlation id (KIP-511).
    """
    if api_key == ApiKey.API_VERSIONS:
        return 0
    schema = _RESPONSES.get(api_key)
    if schema is not None and schema.is_flexible(api_version):
        return 1
    return 0
