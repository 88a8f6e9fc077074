"""Settings of ``pylog serve``, under Kafka's broker config names.

A :class:`ServerConfig` is built from, in increasing priority: the defaults below, a
Kafka-style ``server.properties`` file (``--config FILE``), and ``key=value`` overrides
(``--override``, and the dedicated flags such as ``--listen``).  Names are Kafka's
(``socket.request.max.bytes``, ``auto.create.topics.enable``, ...); a name pylog does not
know is rejected with the list of known ones, so a typo never silently does nothing.

Immutable after construction; safe to share between threads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from pylog.errors import InvalidConfigError

__all__ = ["ServerConfig", "parse_listener", "read_properties_file"]

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def parse_listener(text: str, *, default_port: int = 9092) -> tuple[str, int]:
    """``HOST:PORT`` (or Kafka's ``PLAINTEXT://HOST:PORT``, or ``[v6]:PORT``) as (host, port).

    Raises
    ------
    InvalidConfigError
        The text is not a host and a port in 0..65535.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidConfigError(f"listener {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9092")
    t = text.strip()
    if "://" in t:
        scheme, t = t.split("://", 1)
        if scheme.upper() not in ("PLAINTEXT", "TCP"):
            raise InvalidConfigError(
                f"listener {text!r}: pylog serves PLAINTEXT only (no TLS/SASL listeners)")
    if "," in t:
        raise InvalidConfigError(f"listener {text!r}: pylog serves one listener; give one HOST:PORT")
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep:
            raise InvalidConfigError(f"listener {text!r}: unterminated [IPv6] address")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_text = t.rpartition(":")
        if not sep:
            host, port_text = t, str(default_port)
    if not port_text:
        port_text = str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidConfigError(f"listener {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise InvalidConfigError(f"listener {text!r}: port {port} is outside 0..65535")
    return host or "0.0.0.0", port


def read_properties_file(path: str | os.PathLike) -> dict[str, str]:
    """Read a Java ``.properties`` file as Kafka's ``server.properties`` is written:
    ``key=value`` or ``key: value`` lines, ``#``/``!`` comments, trailing ``\\`` continues
    a line.  (Unicode escapes are not interpreted: broker configs do not need them.)"""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise InvalidConfigError(f"cannot read config file {os.fspath(path)!r}: {exc.strerror}") from None
    pending = ""
    for raw in lines:
        line = raw.strip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        line = pending + line
        pending = ""
        cut = min([i for i in (line.find("="), line.find(":")) if i >= 0], default=-1)
        if cut < 0:
            key, value = line, ""
        else:
            key, value = line[:cut], line[cut + 1:]
        out[key.strip()] = value.strip()
    return out


def _to_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise InvalidConfigError(f"{name}={raw!r} must be true or false")


def _to_int(name: str, raw: Any, lo: int, hi: int) -> int:
    if isinstance(raw, bool):
        raise InvalidConfigError(f"{name}={raw!r} must be an integer")
    try:
        value = int(raw.strip()) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError):
        raise InvalidConfigError(f"{name}={raw!r} must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidConfigError(f"{name}={value} is out of range: it must be in [{lo}, {hi}]")
    return value


@dataclass(frozen=True)
class ServerConfig:
    """``pylog serve`` settings (attribute = Kafka's name with dots as underscores).

    Network
        ``listeners`` (``HOST:PORT``, default ``127.0.0.1:9092``; port 0 picks a free port),
        ``advertised_listeners`` (what Metadata tells clients to connect to; default: the
        bound address), ``socket_request_max_bytes`` (largest request frame, 100 MiB),
        ``connections_max_idle_ms`` (close a connection silent this long, 10 min),
        ``max_connections``, ``queued_max_request_bytes`` (bytes of requests buffered
        across all connections before the server stops reading more; default 512 MiB, so
        memory stays bounded however many clients announce large requests (Kafka's
        default, -1, bounds only each request); one request may always proceed alone), ``socket_send_buffer_bytes`` / ``socket_receive_buffer_bytes``
        (-1: the OS default).
    Topics
        ``auto_create_topics_enable`` (create a topic on first Metadata/Produce),
        ``num_partitions`` (of auto-created topics), ``default_replication_factor`` (must be
        1: one broker), ``delete_topic_enable``.
    Storage and logs
        ``log_dirs``, ``log_segment_bytes``, ``log_retention_ms``, ``log_retention_bytes``,
        ``log_flush_interval_messages`` / ``log_flush_interval_ms`` (-1: leave flushing to
        the OS, Kafka's default), ``log_flush_scheduler_interval_ms``,
        ``log_retention_check_interval_ms``, ``message_max_bytes``, ``log_cleaner_enable``.
    Groups
        ``group_initial_rebalance_delay_ms``, ``group_min_session_timeout_ms``,
        ``group_max_session_timeout_ms``, ``offsets_topic_num_partitions``,
        ``offsets_retention_minutes``, ``offset_metadata_max_bytes``.
    Fetch
        ``fetch_max_bytes`` (cap on one Fetch response, Kafka's 55 MiB).
    """

    listeners: str = "127.0.0.1:9092"
    advertised_listeners: str | None = None
    node_id: int = 0
    socket_request_max_bytes: int = 104857600
    connections_max_idle_ms: int = 600_000
    max_connections: int = _INT32_MAX
    queued_max_request_bytes: int = 512 * 1024 * 1024
    socket_send_buffer_bytes: int = -1
    socket_receive_buffer_bytes: int = -1
    auto_create_topics_enable: bool = True
    num_partitions: int = 1
    default_replication_factor: int = 1
    delete_topic_enable: bool = True
    log_dirs: str = "./pylog-data"
    log_segment_bytes: int = 1024 * 1024 * 1024
    log_retention_ms: int = 7 * 24 * 3600 * 1000
    log_retention_bytes: int = -1
    log_flush_interval_messages: int = -1
    log_flush_interval_ms: int = -1
    log_flush_scheduler_interval_ms: int = 1000
    log_retention_check_interval_ms: int = 300_000
    log_cleaner_enable: bool = True
    message_max_bytes: int = 1048588
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    offsets_topic_num_partitions: int = 50
    offsets_retention_minutes: int = 7 * 24 * 60
    offset_metadata_max_bytes: int = 4096
    fetch_max_bytes: int = 57_671_680

    _INT_RANGES = {
        "node_id": (0, _INT32_MAX),
        "socket_request_max_bytes": (1, _INT32_MAX),
        "connections_max_idle_ms": (1, _INT64_MAX),
        "max_connections": (1, _INT32_MAX),
        "queued_max_request_bytes": (-1, _INT64_MAX),
        "socket_send_buffer_bytes": (-1, _INT32_MAX),
        "socket_receive_buffer_bytes": (-1, _INT32_MAX),
        "num_partitions": (1, 100_000),
        "default_replication_factor": (1, 1),
        "log_segment_bytes": (14, _INT32_MAX),
        "log_retention_ms": (-1, _INT64_MAX),
        "log_retention_bytes": (-1, _INT64_MAX),
        "log_flush_interval_messages": (-1, _INT64_MAX),
        "log_flush_interval_ms": (-1, _INT64_MAX),
        "log_flush_scheduler_interval_ms": (1, _INT64_MAX),
        "log_retention_check_interval_ms": (1, _INT64_MAX),
        "message_max_bytes": (0, _INT32_MAX),
        "group_initial_rebalance_delay_ms": (0, _INT32_MAX),
        "group_min_session_timeout_ms": (1, _INT32_MAX),
        "group_max_session_timeout_ms": (1, _INT32_MAX),
        "offsets_topic_num_partitions": (1, 100_000),
        "offsets_retention_minutes": (1, _INT32_MAX),
        "offset_metadata_max_bytes": (0, _INT32_MAX),
        "fetch_max_bytes": (1024, _INT32_MAX),
    }
    _BOOLS = ("auto_create_topics_enable", "delete_topic_enable", "log_cleaner_enable")
    #: Kafka's alternative spellings of some settings.
    _ALIASES = {
        "log.dir": "log.dirs",
        "broker.id": "node.id",
        "log.retention.hours": None,     # converted to log.retention.ms
        "log.retention.minutes": None,
    }

    def __post_init__(self) -> None:
        for name, (lo, hi) in self._INT_RANGES.items():
            object.__setattr__(self, name, _to_int(_kafka(name), getattr(self, name), lo, hi))
        for name in self._BOOLS:
            object.__setattr__(self, name, _to_bool(_kafka(name), getattr(self, name)))
        parse_listener(self.listeners)
        if self.advertised_listeners is not None:
            parse_listener(self.advertised_listeners)
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms:
            raise InvalidConfigError("group.min.session.timeout.ms is larger than group.max.session.timeout.ms")
        if not isinstance(self.log_dirs, str) or not self.log_dirs or "," in self.log_dirs:
            raise InvalidConfigError(f"log.dirs={self.log_dirs!r}: give one directory")

    # -- construction --------------------------------------------------------------

    @classmethod
    def kafka_names(cls) -> list[str]:
        """Every setting's Kafka name."""
        return [_kafka(f.name) for f in dataclasses.fields(cls)]

    @classmethod
    def from_kafka(cls, props: Mapping[str, Any]) -> ServerConfig:
        """Build from Kafka's dotted names (string or typed values).

        Raises
        ------
        InvalidConfigError
            An unknown name or a bad value; the message names the setting.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in props.items():
            if not isinstance(key, str):
                raise InvalidConfigError(f"config names are strings, got {key!r}")
            k = key.strip()
            if k in ("log.retention.hours", "log.retention.minutes"):
                unit = 3_600_000 if k.endswith("hours") else 60_000
                values.setdefault("log_retention_ms", _to_int(k, raw, -1, _INT64_MAX // unit) * unit
                                  if str(raw).strip() != "-1" else -1)
                continue
            k = cls._ALIASES.get(k) or k
            name = k.replace(".", "_").replace("-", "_")
            if name not in known:
                raise InvalidConfigError(
                    f"unknown server config {key!r}; known settings: {', '.join(sorted(cls.kafka_names()))}")
            values[name] = raw.strip() if isinstance(raw, str) else raw
        if values.get("advertised_listeners") in ("",):
            values["advertised_listeners"] = None
        made = cls(**values)
        object.__setattr__(made, "_explicit", frozenset(_kafka(n) for n in values))
        return made

    @property
    def explicit(self) -> frozenset[str]:
        """Kafka names of the settings given explicitly (file, flags, overrides)."""
        return getattr(self, "_explicit", frozenset())

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    def to_kafka(self) -> dict[str, str]:
        """Every setting under its Kafka name, as strings (DescribeConfigs of the broker)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                v = ""
            elif isinstance(v, bool):
                v = str(v).lower()
            out[_kafka(f.name)] = str(v)
        return out

    # -- derived -------------------------------------------------------------------

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listener(self.listeners)

    def advertised_address(self, bound: tuple[str, int]) -> tuple[str, int]:
        """What Metadata advertises: ``advertised.listeners``, else the bound address
        (a wildcard bind advertises the loopback address rather than 0.0.0.0)."""
        if self.advertised_listeners:
            return parse_listener(self.advertised_listeners, default_port=bound[1])
        host, port = bound
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        return host, port


def _kafka(name: str) -> str:
    return name.replace("_", ".")
