"""Kafka's topic-level configs: names, types, defaults, validation, and the step to a
:class:`~pylog.storage.LogConfig`.

Every topic config Kafka (3.9) accepts is in :data:`TOPIC_CONFIGS`, under its dotted name,
with its DescribeConfigs type, its default and its valid range.  Values arrive as strings
(CreateTopics / AlterConfigs requests, ``.properties`` files) or as Python values (the
embedded API: ``{"retention.ms": 604800000, "cleanup.policy": ["compact"]}``);
:func:`normalize` checks them and turns them into Kafka's canonical string form, which is
what the broker stores and what DescribeConfigs returns.  :class:`TopicConfig` is one
topic's effective settings (defaults, broker-level overrides, topic overrides) with typed
access and :meth:`TopicConfig.log_config`.

What each setting does in pylog:

- the log settings (``segment.*``, ``retention.*``, ``flush.*``, ``index.interval.bytes``,
  ``max.message.bytes``, ``message.timestamp.type``, ``cleanup.policy``, the compaction
  settings, ``file.delete.delay.ms``, ``preallocate``) go to the partition logs;
- ``compression.type``, ``min.insync.replicas`` and the ``message.timestamp.*.max.ms``
  bounds are applied by the broker core on produce;
- the replication, tiered-storage and down-conversion settings
  (``*.replication.throttled.replicas``, ``unclean.leader.election.enable``,
  ``remote.*``, ``local.retention.*``, ``message.downconversion.enable``,
  ``message.format.version``) are validated, stored and described, and have no effect on a
  single node without tiered storage.

Everything here is pure and thread-safe.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from pylog._value import FrozenValue
from pylog.errors import InvalidConfigError
from pylog.storage import LogConfig

__all__ = [
    "ConfigType",
    "ConfigSource",
    "ConfigDef",
    "ConfigEntry",
    "TOPIC_CONFIGS",
    "TopicConfig",
    "normalize",
    "normalize_all",
    "check_config_ops",
    "apply_config_ops",
    "LONG_MAX",
]

INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
LONG_MAX = 2**63 - 1
LONG_MIN = -(2**63)


class ConfigType:
    """DescribeConfigs (v3+) ``config_type`` values."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


class ConfigSource:
    """DescribeConfigs ``config_source`` values."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5


class ConfigDef(FrozenValue):
    """One topic config.

    Attributes
    ----------
    name : str
        Kafka's dotted name.
    type : int
        A :class:`ConfigType`.
    default : str
        The default in canonical string form.
    doc : str
        What it does (DescribeConfigs ``documentation``).
    check : callable
        Called with the parsed value; returns an error message or None.
    log_field : str or None
        The :class:`LogConfig` field it sets, if any.
    broker_name : str or None
        The broker config that sets its default for every topic (``log.retention.ms``).
    """

    __slots__ = _fields = ("name", "type", "default", "doc", "check", "log_field", "broker_name")
    name: str
    type: int
    default: str
    doc: str
    check: Callable[[Any], str | None]
    log_field: str | None
    broker_name: str | None

    def __init__(self, name: str, type: int, default: str, doc: str,  # noqa: A002 - Kafka's field name
                 check: Callable[[Any], str | None], log_field: str | None = None,
                 broker_name: str | None = None) -> None:
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "type", type)
        set_(self, "default", default)
        set_(self, "doc", doc)
        set_(self, "check", check)
        set_(self, "log_field", log_field)
        set_(self, "broker_name", broker_name)


class ConfigEntry(FrozenValue):
    """One described config (a DescribeConfigs result entry)."""

    __slots__ = _fields = ("name", "value", "source", "is_default", "read_only", "is_sensitive", "type",
                           "documentation", "synonyms")
    name: str
    value: str | None
    source: int
    is_default: bool
    read_only: bool
    is_sensitive: bool
    type: int
    documentation: str
    synonyms: tuple[tuple[str, str | None, int], ...]

    def __init__(self, name: str, value: str | None, source: int, is_default: bool, read_only: bool = False,
                 is_sensitive: bool = False, type: int = ConfigType.UNKNOWN,  # noqa: A002 - Kafka's field name
                 documentation: str = "", synonyms: tuple[tuple[str, str | None, int], ...] = ()) -> None:
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "value", value)
        set_(self, "source", source)
        set_(self, "is_default", is_default)
        set_(self, "read_only", read_only)
        set_(self, "is_sensitive", is_sensitive)
        set_(self, "type", type)
        set_(self, "documentation", documentation)
        set_(self, "synonyms", synonyms)


def _range(lo: float | None, hi: float | None = None) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            if hi is None:
                return f"must be at least {lo}"
            return f"must be in [{lo}, {hi}]"
        return None
    return check


def _one_of(*choices: str, case_insensitive: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        probe = v.lower() if case_insensitive else v
        allowed = [c.lower() for c in choices] if case_insensitive else list(choices)
        if probe not in allowed:
            return f"must be one of {', '.join(choices)}"
        return None
    return check


def _list_of(*choices: str, allow_empty: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not v and not allow_empty:
            return "must name at least one of " + ", ".join(choices)
        bad = [x for x in v if x not in choices]
        if bad:
            return f"has {', '.join(bad)}; allowed: {', '.join(choices)}"
        return None
    return check


def _throttled_replicas(v: Any) -> str | None:
    # "" | "*" | "partition:broker,partition:broker,..."
    if v == ["*"] or not v:
        return None
    for item in v:
        part, colon, broker = item.partition(":")
        if not colon or not part.strip().isdigit() or not broker.strip().isdigit():
            return "must be empty, '*', or a list of partition:broker_id pairs"
    return None


def _anything(v: Any) -> None:
    return None


_B, _S, _I, _L, _D, _LI = (ConfigType.BOOLEAN, ConfigType.STRING, ConfigType.INT, ConfigType.LONG,
                           ConfigType.DOUBLE, ConfigType.LIST)
_DAY = 24 * 3600 * 1000

_DEFS = [
    ConfigDef("cleanup.policy", _LI, "delete",
              "delete: drop old segments past retention; compact: keep the newest record per key; "
              "both together do both; empty (Kafka 4.x): neither, the log is kept whole",
              _list_of("delete", "compact", allow_empty=True), "cleanup_policy",
              "log.cleanup.policy"),
    ConfigDef("compression.gzip.level", _I, "-1", "gzip level when compression.type is gzip",
              lambda v: None if v == -1 or 1 <= v <= 9 else "must be -1 or in [1, 9]", None,
              "compression.gzip.level"),
    ConfigDef("compression.lz4.level", _I, "9", "lz4 level when compression.type is lz4",
              _range(1, 17), None, "compression.lz4.level"),
    ConfigDef("compression.type", _S, "producer",
              "codec the log keeps batches in: producer keeps what the producer sent; "
              "uncompressed, gzip, snappy, lz4 or zstd recompress batches on produce",
              _one_of("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"), None,
              "compression.type"),
    ConfigDef("compression.zstd.level", _I, "3", "zstd level when compression.type is zstd",
              _range(-131072, 22), None, "compression.zstd.level"),
    ConfigDef("delete.retention.ms", _L, str(_DAY),
              "how long compaction keeps tombstones readable", _range(0), "delete_retention_ms",
              "log.cleaner.delete.retention.ms"),
    ConfigDef("file.delete.delay.ms", _L, "60000", "delay before a deleted segment's files go",
              _range(0), "file_delete_delay_ms", "log.segment.delete.delay.ms"),
    ConfigDef("flush.messages", _L, str(LONG_MAX),
              "fsync after this many records (default: leave it to the OS)", _range(1),
              "flush_messages", "log.flush.interval.messages"),
    ConfigDef("flush.ms", _L, str(LONG_MAX),
              "fsync when the last fsync is this old (default: leave it to the OS)", _range(0),
              "flush_ms", "log.flush.interval.ms"),
    ConfigDef("follower.replication.throttled.replicas", _LI, "",
              "replicas throttled on followers (no effect on a single node)", _throttled_replicas,
              None, "follower.replication.throttled.replicas"),
    ConfigDef("index.interval.bytes", _I, "4096", "bytes of log between offset index entries",
              _range(0), "index_interval_bytes", "log.index.interval.bytes"),
    ConfigDef("leader.replication.throttled.replicas", _LI, "",
              "replicas throttled on the leader (no effect on a single node)", _throttled_replicas,
              None, "leader.replication.throttled.replicas"),
    ConfigDef("local.retention.bytes", _L, "-2",
              "local retention with tiered storage (-2: retention.bytes); no tiered storage here",
              _range(-2), None, "log.local.retention.bytes"),
    ConfigDef("local.retention.ms", _L, "-2",
              "local retention with tiered storage (-2: retention.ms); no tiered storage here",
              _range(-2), None, "log.local.retention.ms"),
    ConfigDef("max.compaction.lag.ms", _L, str(LONG_MAX),
              "longest a record stays uncompacted", _range(1), "max_compaction_lag_ms",
              "log.cleaner.max.compaction.lag.ms"),
    ConfigDef("max.message.bytes", _I, "1048588",
              "largest record batch the log accepts", _range(0), "max_message_bytes",
              "message.max.bytes"),
    ConfigDef("message.downconversion.enable", _B, "true",
              "down-convert for old consumers (pylog serves only v2 batches)", _anything, None,
              "log.message.downconversion.enable"),
    ConfigDef("message.format.version", _S, "3.0-IV1",
              "deprecated; record batches are always v2", _anything, None,
              "log.message.format.version"),
    # Kafka 4.0 lowered this default from Long.MAX_VALUE to one hour: a producer
    # whose clock runs ahead by more is refused rather than poisoning time-based retention.
    ConfigDef("message.timestamp.after.max.ms", _L, "3600000",
              "largest amount a CreateTime timestamp may be ahead of the broker's clock",
              _range(0), None, "log.message.timestamp.after.max.ms"),
    ConfigDef("message.timestamp.before.max.ms", _L, str(LONG_MAX),
              "largest amount a CreateTime timestamp may be behind the broker's clock",
              _range(0), None, "log.message.timestamp.before.max.ms"),
    ConfigDef("message.timestamp.difference.max.ms", _L, str(LONG_MAX),
              "deprecated bound on |timestamp - broker time| for CreateTime", _range(0), None,
              "log.message.timestamp.difference.max.ms"),
    ConfigDef("message.timestamp.type", _S, "CreateTime",
              "CreateTime keeps the producer's timestamps; LogAppendTime stamps the append time",
              _one_of("CreateTime", "LogAppendTime"), "message_timestamp_type",
              "log.message.timestamp.type"),
    ConfigDef("min.cleanable.dirty.ratio", _D, "0.5",
              "dirty share of the log that makes the cleaner compact it", _range(0, 1),
              "min_cleanable_dirty_ratio", "log.cleaner.min.cleanable.ratio"),
    ConfigDef("min.compaction.lag.ms", _L, "0", "shortest a record stays uncompacted", _range(0),
              "min_compaction_lag_ms", "log.cleaner.min.compaction.lag.ms"),
    ConfigDef("min.insync.replicas", _I, "1",
              "replicas that must have a record before acks=all succeeds (a single node has one)",
              _range(1), None, "min.insync.replicas"),
    ConfigDef("preallocate", _B, "false",
              "preallocate segment files (pylog always maps the active segment preallocated)",
              _anything, "preallocate", "log.preallocate"),
    ConfigDef("remote.log.copy.disable", _B, "false", "tiered storage (not available here)",
              _anything, None, None),
    ConfigDef("remote.log.delete.on.disable", _B, "false", "tiered storage (not available here)",
              _anything, None, None),
    ConfigDef("remote.storage.enable", _B, "false", "tiered storage (not available here)",
              lambda v: "tiered storage is not available in pylog" if v else None, None, None),
    ConfigDef("retention.bytes", _L, "-1",
              "delete the oldest segments while a partition is larger than this (-1: no limit)",
              _range(-1), "retention_bytes", "log.retention.bytes"),
    ConfigDef("retention.ms", _L, str(7 * _DAY),
              "delete segments whose newest record is older than this (-1: keep forever)",
              _range(-1), "retention_ms", "log.retention.ms"),
    ConfigDef("segment.bytes", _I, str(1024 * 1024 * 1024), "size at which a segment rolls",
              _range(14), "segment_bytes", "log.segment.bytes"),
    ConfigDef("segment.index.bytes", _I, str(10 * 1024 * 1024),
              "size of each segment's preallocated index files", _range(12), "segment_index_bytes",
              "log.index.size.max.bytes"),
    ConfigDef("segment.jitter.ms", _L, "0", "random reduction of segment.ms", _range(0),
              "segment_jitter_ms", "log.roll.jitter.ms"),
    ConfigDef("segment.ms", _L, str(7 * _DAY), "age at which a segment rolls", _range(1),
              "segment_ms", "log.roll.ms"),
    ConfigDef("unclean.leader.election.enable", _B, "false",
              "let an out-of-sync replica become leader (no effect on a single node)", _anything,
              None, "unclean.leader.election.enable"),
]

#: Every topic config, by Kafka's name, in name order.
TOPIC_CONFIGS: dict[str, ConfigDef] = {d.name: d for d in sorted(_DEFS, key=lambda d: d.name)}

_TYPE_NAMES = {_B: "boolean", _S: "string", _I: "int", _L: "long", _D: "double", _LI: "list"}


def _parse(d: ConfigDef, raw: Any) -> Any:
    """The typed value of ``raw`` (a string or a Python value) for ``d``."""
    t = d.type
    what = _TYPE_NAMES.get(t, "value")
    if t == _B:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
    elif t in (_I, _L):
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str):
            try:
                value = int(raw.strip())
            except ValueError:
                value = None
        else:
            value = None
        if value is not None:
            lo, hi = (INT_MIN, INT_MAX) if t == _I else (LONG_MIN, LONG_MAX)
            if not lo <= value <= hi:
                raise InvalidConfigError(f"{d.name}={raw!r} does not fit a {what}")
            return value
    elif t == _D:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
    elif t == _S:
        if isinstance(raw, str):
            return raw.strip()
    elif t == _LI:
        if isinstance(raw, str):
            return [x.strip() for x in raw.split(",") if x.strip()]
        if isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
            return [x.strip() for x in raw if x.strip()]
    raise InvalidConfigError(
        f"{d.name}={raw!r} is not a valid {what}" + (f" ({type(raw).__name__} given)" if not isinstance(raw, str) else ""))


def _canonical(d: ConfigDef, value: Any) -> str:
    if d.type == _B:
        return "true" if value else "false"
    if d.type == _LI:
        return ",".join(value)
    if d.type == _D:
        return repr(float(value))
    return str(value)


def normalize(name: str, raw: Any) -> str:
    """Check one topic config and return its canonical string value.

    Raises
    ------
    InvalidConfigError
        ``name`` is not a topic config, or ``raw`` has the wrong type or is out of range
        (the message names the setting and what it accepts).
    """
    if not isinstance(name, str):
        raise InvalidConfigError(f"config names are strings, got {name!r}")
    d = TOPIC_CONFIGS.get(name)
    if d is None:
        hint = ""
        if "_" in name and name.replace("_", ".") in TOPIC_CONFIGS:
            hint = f" (did you mean {name.replace('_', '.')!r}?)"
        raise InvalidConfigError(f"unknown topic config {name!r}{hint}")
    if raw is None:
        raise InvalidConfigError(f"{name} needs a value (delete an override to get the default)")
    value = _parse(d, raw)
    problem = d.check(value)
    if problem:
        raise InvalidConfigError(f"{name}={raw!r} is invalid: it {problem}")
    return _canonical(d, value)


def normalize_all(configs: Mapping[str, Any] | None) -> dict[str, str]:
    """:func:`normalize` every entry; also checks the settings against each other by
    building the :class:`LogConfig` they give.  Raises InvalidConfigError."""
    out = {name: normalize(name, raw) for name, raw in (configs or {}).items()}
    TopicConfig(out).log_config()
    return out


_OP_NAMES = {0: "set", 1: "delete", 2: "append", 3: "subtract"}


def check_config_ops(ops: Iterable[Any]) -> None:
    """Check IncrementalAlterConfigs operations before anything else (as Kafka, an
    unknown name or a bad value is reported before an unknown topic).  Raises
    InvalidConfigError."""
    for item in ops:
        if isinstance(item, tuple) and len(item) == 3:
            name, op, value = item
            if not isinstance(name, str) or name not in TOPIC_CONFIGS:
                raise InvalidConfigError(f"unknown topic config {name!r}")
            if op in (0, "set"):
                normalize(name, value)


def apply_config_ops(overrides: Mapping[str, str], ops: Iterable[Any],
                     broker_defaults: Mapping[str, str] | None = None) -> dict[str, str]:
    """A topic's overrides after IncrementalAlterConfigs ``ops``: ``(name, op, value)``
    with op ``"set"`` (0), ``"delete"`` (1), ``"append"`` (2) or ``"subtract"`` (3);
    append/subtract only for list configs, against the effective value (``broker_defaults``
    under the overrides).  All or nothing: returns the new overrides, normalized and
    checked together, or raises InvalidConfigError."""
    ops = list(ops)
    check_config_ops(ops)
    out = dict(overrides)
    for item in ops:
        try:
            name, op, value = item
        except (TypeError, ValueError):
            raise InvalidConfigError(f"config operation {item!r} is not (name, op, value)") from None
        op = _OP_NAMES.get(op, op)
        if op not in ("set", "delete", "append", "subtract"):
            raise InvalidConfigError(f"unknown config operation {op!r} for {name!r}")
        if not isinstance(name, str) or name not in TOPIC_CONFIGS:
            raise InvalidConfigError(f"unknown topic config {name!r}")
        if op == "set":
            out[name] = normalize(name, value)
        elif op == "delete":
            out.pop(name, None)
        else:
            d = TOPIC_CONFIGS[name]
            if d.type != 7:
                raise InvalidConfigError(f"{op} applies to list configs; {name} is not one")
            current = TopicConfig(out, broker_defaults)[name]
            items = normalize(name, value).split(",") if value not in (None, "") else []
            if op == "append":
                merged = current + [x for x in items if x not in current]
            else:
                merged = [x for x in current if x not in items]
            # An empty cleanup.policy is valid (Kafka 4.x: no cleanup).
            out[name] = normalize(name, merged) if merged else ""
    return normalize_all(out)


class TopicConfig:
    """One topic's effective configs: topic overrides over broker defaults over Kafka's.

    Parameters
    ----------
    overrides : mapping of name to canonical string
        The topic's own settings (from :func:`normalize_all`).
    broker_defaults : mapping of name to canonical string, optional
        Broker-level defaults (``log.retention.ms`` and the like, keyed by the topic
        config name they set).
    broker_sources : mapping of name to ConfigSource, optional
        Where each broker-level default comes from, for DescribeConfigs:
        STATIC_BROKER_CONFIG (the default), DYNAMIC_DEFAULT_BROKER_CONFIG or
        DYNAMIC_BROKER_CONFIG.
    """

    __slots__ = ("overrides", "broker_defaults", "broker_sources", "_values")

    def __init__(self, overrides: Mapping[str, str] | None = None,
                 broker_defaults: Mapping[str, str] | None = None,
                 broker_sources: Mapping[str, int] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self.broker_defaults = dict(broker_defaults or {})
        self.broker_sources = dict(broker_sources or {})
        self._values: dict[str, Any] = {}
        for name, d in TOPIC_CONFIGS.items():
            raw = self.overrides.get(name, self.broker_defaults.get(name, d.default))
            self._values[name] = _parse(d, raw)

    def __getitem__(self, name: str) -> Any:
        """The typed value of a setting (int, float, bool, str or list of str)."""
        try:
            return self._values[name]
        except KeyError:
            raise InvalidConfigError(f"unknown topic config {name!r}") from None

    def get(self, name: str) -> Any:
        return self[name]

    def log_config(self) -> LogConfig:
        """The :class:`LogConfig` of this topic's partitions.

        Raises
        ------
        InvalidConfigError
            The settings are inconsistent together.
        """
        fields: dict[str, Any] = {}
        for name, d in TOPIC_CONFIGS.items():
            if d.log_field is None:
                continue
            value = self._values[name]
            if d.log_field in ("flush_messages", "flush_ms") and value == LONG_MAX:
                value = None
            elif d.log_field == "cleanup_policy":
                value = ",".join(sorted(set(value), key=("compact", "delete").index))
            elif d.log_field == "preallocate":
                value = bool(value)
            fields[d.log_field] = value
        return LogConfig.from_dict(fields)

    def describe(self, names: Iterable[str] | None = None, *,
                 include_synonyms: bool = False, include_documentation: bool = False) -> list[ConfigEntry]:
        """DescribeConfigs entries for ``names`` (None: every topic config, in name order).
        A name that is not a topic config is left out, as Kafka describes it."""
        wanted = list(TOPIC_CONFIGS) if names is None else list(names)
        out = []
        for name in wanted:
            d = TOPIC_CONFIGS.get(name)
            if d is None:
                continue
            synonyms = []
            if name in self.overrides:
                value, source = self.overrides[name], ConfigSource.DYNAMIC_TOPIC_CONFIG
                synonyms.append((name, value, source))
            elif name in self.broker_defaults:
                value = self.broker_defaults[name]
                source = self.broker_sources.get(name, ConfigSource.STATIC_BROKER_CONFIG)
            else:
                value, source = d.default, ConfigSource.DEFAULT_CONFIG
            if d.broker_name and name in self.broker_defaults:
                synonyms.append((d.broker_name, self.broker_defaults[name],
                                 self.broker_sources.get(name, ConfigSource.STATIC_BROKER_CONFIG)))
            synonyms.append((d.broker_name or name, d.default, ConfigSource.DEFAULT_CONFIG))
            out.append(ConfigEntry(
                name=name, value=value, source=source,
                is_default=source == ConfigSource.DEFAULT_CONFIG,
                type=d.type, documentation=d.doc if include_documentation else "",
                synonyms=tuple(synonyms) if include_synonyms else ()))
        return out

    def as_dict(self) -> dict[str, str]:
        """Every setting's effective value, canonical strings, by name."""
        return {e.name: e.value for e in self.describe()}  # type: ignore[misc]
