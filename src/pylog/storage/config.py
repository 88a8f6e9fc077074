"""Log configuration: Kafka's topic-level log settings, in snake_case.

``LogConfig(segment_bytes=..., ...)`` takes Kafka's names with dots turned into
underscores; :meth:`LogConfig.from_kafka` takes Kafka's own dotted names
(``{"segment.bytes": "1048576"}``, string values as in a ``.properties`` file or a
CreateTopics request).  Every value is validated on construction and a bad one raises
:class:`pylog.errors.InvalidConfigError` naming the setting and the accepted range.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pylog._value import frozen_dataclass
from pylog.errors import InvalidConfigError

__all__ = ["LogConfig"]

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

#: Kafka's default for ``max.message.bytes``: 1 MiB of records plus the 12-byte log overhead.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024 + 12

_TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
#: "" (Kafka 4.x's empty cleanup.policy): no retention and no compaction.
_CLEANUP_POLICIES = ("delete", "compact", "compact,delete", "delete,compact", "")


@frozen_dataclass
class LogConfig:
    """Settings of one partition log (Kafka's topic configs, snake_case).

    Attributes
    ----------
    segment_bytes : int
        Roll to a new segment before one would grow past this (default 1 GiB; 14 to
        2**31 - 1, as Kafka: positions in the offset index are 32-bit).
    segment_ms : int
        Roll when the newest batch's timestamp is this much later than the segment's first
        batch's (default 7 days).
    segment_jitter_ms : int
        Subtracted from ``segment_ms`` so logs created together do not roll together.
    segment_index_bytes : int
        Size of each preallocated index file; a segment rolls when either index is full
        (default 10 MiB).
    index_interval_bytes : int
        Bytes of log between two sparse index entries (default 4096).
    flush_messages : int or None
        fsync after this many records since the last flush (None: leave it to the page
        cache, Kafka's default).
    flush_ms : int or None
        fsync when the last flush is this old (checked on append and by
        :meth:`Log.maybe_flush`); None: never.
    retention_ms : int
        Delete a segment once its largest timestamp is this old; -1: keep forever
        (default 7 days).
    retention_bytes : int
        Delete the oldest segments while the log is larger than this; -1: no limit.
    max_message_bytes : int
        Largest record batch an append accepts (default 1048588, Kafka's).
    message_timestamp_type : str
        ``"CreateTime"`` (keep the producer's timestamps) or ``"LogAppendTime"`` (the log
        stamps each batch with its append time).
    preallocate : bool
        Accepted for Kafka compatibility.  pylog always preallocates the active segment
        (mapped whole; blocks allocated 4 MiB ahead of the writer) and trims it to its
        valid size on roll and close, so closed segments are identical either way.
    mmap_append : bool
        pylog's own setting (not Kafka's): write every append by a memcpy into the
        active segment's memory mapping, the GIL released for large ones.  Default
        False: appends under 1.5 KiB are copied into the mapping, larger ones are
        written into the same preallocated, mapped file with pwritev (reads stay
        zero-copy views of the mapping either way; the page cache is shared).  The
        default measures faster: a store that faults in a fresh page of the mapping makes
        the kernel zero the page before the copy lands (a second pass over the memory),
        while a write() fills new pages directly.  benches/bench_log.py compares both.
        On a file system without fallocate every append takes pwritev (a memcpy into
        unallocated blocks of a full disk would be SIGBUS rather than an error).
    cleanup_policy, delete_retention_ms, min_compaction_lag_ms, max_compaction_lag_ms,
    min_cleanable_dirty_ratio, file_delete_delay_ms
        Kafka's settings for the log cleaner (compaction), validated here and read by it.
    """

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * 24 * 3600 * 1000
    segment_jitter_ms: int = 0
    segment_index_bytes: int = 10 * 1024 * 1024
    index_interval_bytes: int = 4096
    flush_messages: int | None = None
    flush_ms: int | None = None
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    message_timestamp_type: str = "CreateTime"
    preallocate: bool = True
    mmap_append: bool = False
    cleanup_policy: str = "delete"
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = _INT64_MAX
    min_cleanable_dirty_ratio: float = 0.5
    file_delete_delay_ms: int = 60_000

    # Ranges as Kafka's LogConfig declares them.
    _RANGES = {
        "segment_bytes": (14, _INT32_MAX),
        "segment_ms": (1, _INT64_MAX),
        "segment_jitter_ms": (0, _INT64_MAX),
        "segment_index_bytes": (12, _INT32_MAX),
        "index_interval_bytes": (0, _INT32_MAX),
        "flush_messages": (1, _INT64_MAX),
        "flush_ms": (0, _INT64_MAX),
        "retention_ms": (-1, _INT64_MAX),
        "retention_bytes": (-1, _INT64_MAX),
        "max_message_bytes": (0, _INT32_MAX),
        "delete_retention_ms": (0, _INT64_MAX),
        "min_compaction_lag_ms": (0, _INT64_MAX),
        "max_compaction_lag_ms": (1, _INT64_MAX),
        "file_delete_delay_ms": (0, _INT64_MAX),
    }

    def __post_init__(self) -> None:
        for name, (lo, hi) in self._RANGES.items():
            value = getattr(self, name)
            if value is None and name in ("flush_messages", "flush_ms"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfigError(
                    f"{name} must be an int, got {type(value).__name__} {value!r}")
            if not lo <= value <= hi:
                raise InvalidConfigError(f"{name}={value} is out of range: it must be in [{lo}, {hi}]")
        if self.message_timestamp_type not in _TIMESTAMP_TYPES:
            raise InvalidConfigError(
                f"message_timestamp_type={self.message_timestamp_type!r}: use 'CreateTime' or 'LogAppendTime'")
        if self.cleanup_policy not in _CLEANUP_POLICIES:
            raise InvalidConfigError(
                f"cleanup_policy={self.cleanup_policy!r}: use 'delete', 'compact' or 'compact,delete'")
        for name in ("preallocate", "mmap_append"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        ratio = self.min_cleanable_dirty_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise InvalidConfigError(f"min_cleanable_dirty_ratio={ratio!r} must be a number in [0, 1]")
        if self.segment_index_bytes < 12:
            raise InvalidConfigError("segment_index_bytes must hold at least one time-index entry (12 bytes)")

    # -- construction --------------------------------------------------------------

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The snake_case setting names this class accepts."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LogConfig":
        """Build from snake_case names; an unknown name raises InvalidConfigError."""
        known = set(cls.names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidConfigError(
                f"unknown log config {', '.join(map(repr, unknown))}; known settings: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_kafka(cls, props: Mapping[str, Any]) -> "LogConfig":
        """Build from Kafka's dotted names (``"segment.bytes"``, ``"retention.ms"``, ...).

        Values may be strings, as in a ``.properties`` file or a CreateTopics request;
        ``flush.messages`` / ``flush.ms`` at Kafka's "never" (Long.MAX_VALUE) become None.
        Snake_case keys are accepted too.
        """
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in props.items():
            if not isinstance(key, str):
                raise InvalidConfigError(f"config names are strings, got {key!r}")
            name = key.replace(".", "_")
            if name not in kinds:
                raise InvalidConfigError(f"unknown log config {key!r}")
            values[name] = _convert(name, kinds[name], raw)
        for name in ("flush_messages", "flush_ms"):
            if values.get(name) == _INT64_MAX:
                values[name] = None
        return cls(**values)

    def replace(self, **changes: Any) -> "LogConfig":
        """A copy with some settings changed (validated)."""
        return self.from_dict({**dataclasses.asdict(self), **changes})

    def to_kafka(self) -> dict[str, str]:
        """Kafka's dotted names with string values (the inverse of :meth:`from_kafka`)."""
        out = {}
        for name, value in dataclasses.asdict(self).items():
            if value is None:
                value = _INT64_MAX
            if isinstance(value, bool):
                value = str(value).lower()
            out[name.replace("_", ".")] = str(value)
        return out


def _convert(name: str, kind: Any, raw: Any) -> Any:
    kind = str(kind)
    if not isinstance(raw, str):
        return raw  # validated by __post_init__
    text = raw.strip()
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if kind == "float":
            return float(text)
        if kind.startswith("int"):
            return int(text)
    except ValueError:
        raise InvalidConfigError(f"{name.replace('_', '.')}={raw!r} is not a valid {kind.split()[0]}") from None
    return text

