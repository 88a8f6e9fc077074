"""Types of pylog._protocol, the Cython core of the Kafka wire-protocol codec."""

from typing import Any, Callable

from pylog.protocol.segments import FileRegion

K_BOOL: int
K_INT8: int
K_INT16: int
K_INT32: int
K_INT64: int
K_UINT16: int
K_UINT32: int
K_FLOAT64: int
K_UUID: int
K_STRING: int
K_BYTES: int
K_RECORDS: int
K_STRUCT: int
K_ARRAY: int
D_CONST: int
D_LIST: int
D_STRUCT: int

def slot_offset(cls: type, name: str) -> int: ...

class Op:
    kind: int
    name: str
    nullable: bool
    offset: int
    elem: Op | None
    sub: Plan | None
    tag: int
    default_kind: int
    default: Any
    min_size: int
    def __init__(self, kind: int, name: str, *, nullable: bool = ..., offset: int = ...,
                 elem: Op | None = ..., sub: Plan | None = ..., tag: int = ...,
                 default_kind: int = ..., default: Any = ..., min_size: int = ...) -> None: ...

class Plan:
    cls: type
    flexible: bool
    name: str
    wire: list[Op]
    defaults: list[Op]
    tagged: list[Op]
    checks: list[Op]
    has_records: bool
    label: str
    api_key: int | None
    api_version: int | None
    on_unsupported: Callable[[Any, str], None] | None
    on_encode_error: Callable[[Any, BaseException], BaseException] | None
    split_threshold: int
    def __init__(self, cls: type, name: str, flexible: bool, wire: list[Op],
                 defaults: list[Op], tagged: list[Op], checks: list[Op], *,
                 has_records: bool = ..., label: str | None = ..., api_key: int | None = ...,
                 api_version: int | None = ...,
                 on_unsupported: Callable[[Any, str], None] | None = ...,
                 on_encode_error: Callable[[Any, BaseException], BaseException] | None = ...,
                 split_threshold: int = ...) -> None: ...

def decode(plan: Plan, buf: bytes | bytearray | memoryview, pos: int = ...,
           max_trailing: int = ...) -> Any: ...
def frame_buffer(size: int) -> bytearray: ...
def encode(plan: Plan, obj: Any, prefix: bytes = ...,
           frame: bool = ...) -> list[bytearray | bytes | memoryview | FileRegion]: ...
def read_request_header(frame: bytes | bytearray | memoryview, flexible_from: dict[int, int]
                        ) -> tuple[int, int, int, str | None, int, int]: ...
