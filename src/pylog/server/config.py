"""Settings of ``pylog serve``, under Kafka's broker config names.

A :class:`ServerConfig` is built from, in increasing priority: the defaults below, a
Kafka-style ``server.properties`` file (``--config FILE``), and ``key=value`` overrides
(``--override``, and the dedicated flags such as ``--listen``).  Names are Kafka's
(``socket.request.max.bytes``, ``auto.create.topics.enable``, ...), so a real Kafka
``server.properties`` is accepted: a Kafka broker config that means nothing to a single
pylog node (``process.roles``, ``num.network.threads``, ``ssl.*``; the table is
:mod:`pylog.server.kafka_config_names`) is ignored with one WARN line naming it, and a name
that is neither pylog's nor Kafka's is refused with a suggestion, so a typo never silently
does nothing.  Of a Kafka listener list (``PLAINTEXT://:9092,CONTROLLER://:9093``) the one
PLAINTEXT client listener is served and the others are ignored with a WARN.

The broker-level defaults of topic configs (``log.roll.ms``, ``log.cleanup.policy``,
``compression.type``, ... every name in :data:`TOPIC_DEFAULT_SYNONYMS`) are accepted
under Kafka's broker names; some of them, and a few other settings, can also change at
run time (:mod:`pylog.server.dynamic_config`).

Immutable after construction; safe to share between threads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import field
from typing import Any, Mapping

from pylog._value import frozen_dataclass
from pylog.broker.topic_config import TOPIC_CONFIGS, normalize
from pylog.errors import InvalidConfigError

__all__ = ["ServerConfig", "parse_listener", "parse_connection_overrides", "read_properties_file", "TOPIC_DEFAULT_SYNONYMS"]

_log = logging.getLogger("pylog.server.config")

#: Kafka's broker configs that set a topic config's default for every topic (Kafka's
#: ServerTopicConfigSynonyms: the first, highest-priority broker name of each), broker
#: name -> topic config name.
TOPIC_DEFAULT_SYNONYMS: dict[str, str] = {
    "log.segment.bytes": "segment.bytes",
    "log.roll.ms": "segment.ms",
    "log.roll.jitter.ms": "segment.jitter.ms",
    "log.index.size.max.bytes": "segment.index.bytes",
    "log.flush.interval.messages": "flush.messages",
    "log.flush.interval.ms": "flush.ms",
    "log.retention.bytes": "retention.bytes",
    "log.retention.ms": "retention.ms",
    "message.max.bytes": "max.message.bytes",
    "log.index.interval.bytes": "index.interval.bytes",
    "log.cleaner.delete.retention.ms": "delete.retention.ms",
    "log.cleaner.min.compaction.lag.ms": "min.compaction.lag.ms",
    "log.cleaner.max.compaction.lag.ms": "max.compaction.lag.ms",
    "log.segment.delete.delay.ms": "file.delete.delay.ms",
    "log.cleaner.min.cleanable.ratio": "min.cleanable.dirty.ratio",
    "log.cleanup.policy": "cleanup.policy",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
    "min.insync.replicas": "min.insync.replicas",
    "compression.type": "compression.type",
    "compression.gzip.level": "compression.gzip.level",
    "compression.lz4.level": "compression.lz4.level",
    "compression.zstd.level": "compression.zstd.level",
    "log.preallocate": "preallocate",
    "log.message.format.version": "message.format.version",
    "log.message.timestamp.type": "message.timestamp.type",
    "log.message.timestamp.difference.max.ms": "message.timestamp.difference.max.ms",
    "log.message.timestamp.before.max.ms": "message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms": "message.timestamp.after.max.ms",
    "log.message.downconversion.enable": "message.downconversion.enable",
    "log.local.retention.ms": "local.retention.ms",
    "log.local.retention.bytes": "local.retention.bytes",
}

#: Lower-priority spellings of a setting in another unit (Kafka: the ms form wins over
#: minutes, minutes over hours): name -> (the setting, milliseconds per unit, priority).
_UNIT_SYNONYMS = {
    "log.retention.minutes": ("log.retention.ms", 60_000, 1),
    "log.retention.hours": ("log.retention.ms", 3_600_000, 2),
    "log.roll.hours": ("log.roll.ms", 3_600_000, 1),
    "log.roll.jitter.hours": ("log.roll.jitter.ms", 3_600_000, 1),
}
#: Kafka names read while choosing the served listener (not "ignored").
_LISTENER_KEYS = ("listener.security.protocol.map", "inter.broker.listener.name", "controller.listener.names")

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


def parse_connection_overrides(text: Any) -> dict[str, int]:
    """``max.connections.per.ip.overrides`` (``host:count,host:count``; a host is a name
    or an address, ``[v6]`` bracketed or not) as ``{host: count}``.

    Raises
    ------
    InvalidConfigError
        An entry without a host or with a count that is not an integer >= 0.
    """
    name = "max.connections.per.ip.overrides"
    if text is None:
        return {}
    if not isinstance(text, str):
        raise InvalidConfigError(f"{name}={text!r} must be a string of host:count pairs")
    out: dict[str, int] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        host, sep, count = item.rpartition(":")
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host:
            raise InvalidConfigError(f"{name}: {item!r} is not host:count (e.g. 127.0.0.1:200)")
        out[host] = _to_int(f"{name} entry {host}", count, 0, _INT32_MAX)
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


@frozen_dataclass
class ServerConfig:
    """``pylog serve`` settings (attribute = Kafka's name with dots as underscores).

    Network
        ``listeners`` (``HOST:PORT``, default ``127.0.0.1:9092``; port 0 picks a free port),
        ``advertised_listeners`` (what Metadata tells clients to connect to; default: the
        bound address), ``socket_request_max_bytes`` (largest request frame, 100 MiB),
        ``connections_max_idle_ms`` (close a connection silent this long, 10 min),
        ``max_connections`` (connections open at once; at the cap the server stops
        accepting until one closes, as Kafka's acceptor does; default 16384, see below),
        ``max_connections_per_ip`` (Kafka's default: no cap; a connection beyond it is
        closed at once) with ``max_connections_per_ip_overrides`` (``host:count,...``;
        hosts by name or address), ``queued_max_request_bytes`` (bytes of requests buffered
        across all connections before the server stops reading more; default 512 MiB, so
        memory stays bounded however many clients announce large requests (Kafka's
        default, -1, bounds only each request); one request may always proceed alone),
        ``socket_send_buffer_bytes`` / ``socket_receive_buffer_bytes`` (SO_SNDBUF of each
        accepted connection, SO_RCVBUF of the listener, which accepted connections
        inherit, as Kafka's acceptor sets them; Kafka's default, 102400, for both; -1: the
        OS's own, autotuned, buffers).  Kafka's 100 KB is also pylog's best on loopback:
        a Fetch answer of 1 KB records cost the server 0.20-0.23 ms of CPU per MB with it
        and 0.30-0.37 with the OS's autotuned send buffer, which lets a sendfile queue
        megabytes at once (alternating runs, ``bench_vs_kafka``'s workloads).
    Topics
        ``auto_create_topics_enable`` (create a topic on first Metadata/Produce),
        ``num_partitions`` (of auto-created topics), ``default_replication_factor`` (1
        unless clustered), ``delete_topic_enable``.
    Cluster (:mod:`pylog.cluster.node`; all unused without ``zookeeper_connect``)
        ``zookeeper_connect`` (``HOST:PORT[,...][/chroot]``: join a ZooKeeper-coordinated
        cluster as broker ``node_id``), ``zookeeper_session_timeout_ms`` (18000),
        ``broker_rack``, ``replica_lag_time_max_ms`` (30000),
        ``replica_high_watermark_checkpoint_interval_ms`` (5000: how often each partition's
        high watermark goes to ``replication-offset-checkpoint``),
        ``unclean_leader_election_enable``; the controller's automatic preferred-leader
        election: ``auto_leader_rebalance_enable`` (true), ``leader_imbalance_check_interval_seconds``
        (300), ``leader_imbalance_per_broker_percentage`` (10); ``min.insync.replicas`` is a topic default.
    Storage and logs
        ``log_dirs``, ``log_segment_bytes``, ``log_retention_ms``, ``log_retention_bytes``,
        ``log_flush_interval_messages`` / ``log_flush_interval_ms`` (Long.MAX_VALUE / -1:
        leave flushing to the OS, Kafka's default), ``log_flush_scheduler_interval_ms``,
        ``log_retention_check_interval_ms``, ``message_max_bytes``, ``log_cleaner_enable``,
        ``log_cleaner_backoff_ms``, ``log_cleaner_dedupe_buffer_size``,
        ``num_recovery_threads_per_data_dir`` (threads that open and recover the partitions
        after an unclean shutdown; 8, see :data:`pylog.storage.manager.DEFAULT_RECOVERY_THREADS`);
        ``log_defaults``
        holds the other broker-level topic defaults by Kafka name (``log.roll.ms``, ...).
    Groups
        ``group_initial_rebalance_delay_ms``, ``group_min_session_timeout_ms``,
        ``group_max_session_timeout_ms``, ``offsets_topic_num_partitions``, ``offsets_topic_segment_bytes``,
        ``offsets_topic_replication_factor`` (a cluster's), ``offsets_retention_minutes``, ``offset_metadata_max_bytes``,
        ``offsets_commit_timeout_ms`` (5000: how long a cluster's coordinator waits for the ISR to take a commit).
    Transactions
        ``transaction_state_log_num_partitions``, ``transaction_state_log_segment_bytes``,
        ``transaction_state_log_replication_factor`` and ``transaction_state_log_min_isr`` (a cluster's),
        ``transaction_max_timeout_ms``, ``transactional_id_expiration_ms``,
        ``transaction_abort_timed_out_transaction_cleanup_interval_ms``,
        ``transaction_remove_expired_transaction_cleanup_interval_ms``.
    Fetch
        ``fetch_max_bytes`` (cap on one Fetch response, Kafka's 55 MiB),
        ``max_incremental_fetch_session_cache_slots`` (fetch sessions kept, KIP-227;
        Kafka's 1000; 0 turns sessions off).

    ``max_connections`` defaults to 16384 where Kafka has no cap (2^31-1): every
    connection costs the server memory (its buffers and objects, some kB idle) and a file
    descriptor, so an unbounded count lets a client bug or a connection storm exhaust
    either; 16384 bounds idle-connection memory to tens of MB while leaving room above
    the 10,000 idle clients plus active producers a single node is expected to carry.
    """

    listeners: str = "127.0.0.1:9092"
    advertised_listeners: str | None = None
    node_id: int = 0
    socket_request_max_bytes: int = 104857600
    connections_max_idle_ms: int = 600_000
    max_connections: int = 16384
    max_connections_per_ip: int = _INT32_MAX
    max_connections_per_ip_overrides: str = ""
    queued_max_request_bytes: int = 512 * 1024 * 1024
    socket_send_buffer_bytes: int = 102400
    socket_receive_buffer_bytes: int = 102400
    auto_create_topics_enable: bool = True
    num_partitions: int = 1
    default_replication_factor: int = 1
    delete_topic_enable: bool = True
    zookeeper_connect: str | None = None
    zookeeper_session_timeout_ms: int = 18_000
    broker_rack: str | None = None
    replica_lag_time_max_ms: int = 30_000
    replica_high_watermark_checkpoint_interval_ms: int = 5000
    unclean_leader_election_enable: bool = False
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    leader_imbalance_per_broker_percentage: int = 10
    log_dirs: str = "./pylog-data"
    log_segment_bytes: int = 1024 * 1024 * 1024
    log_retention_ms: int = 7 * 24 * 3600 * 1000
    log_retention_bytes: int = -1
    log_flush_interval_messages: int = _INT64_MAX
    log_flush_interval_ms: int = -1
    log_flush_scheduler_interval_ms: int = 1000
    log_flush_offset_checkpoint_interval_ms: int = 60_000
    producer_id_expiration_ms: int = 86_400_000
    producer_id_expiration_check_interval_ms: int = 600_000
    log_retention_check_interval_ms: int = 300_000
    log_cleaner_enable: bool = True
    log_cleaner_backoff_ms: int = 15_000
    log_cleaner_dedupe_buffer_size: int = 128 * 1024 * 1024
    num_recovery_threads_per_data_dir: int = 8
    message_max_bytes: int = 1048588
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    offsets_topic_num_partitions: int = 50
    offsets_topic_segment_bytes: int = 100 * 1024 * 1024
    #: Of the cluster's ``__consumer_offsets`` (``zookeeper.connect`` set); Kafka's default.
    offsets_topic_replication_factor: int = 3
    offsets_retention_minutes: int = 7 * 24 * 60
    offsets_commit_timeout_ms: int = 5000
    offset_metadata_max_bytes: int = 4096
    transaction_state_log_num_partitions: int = 50
    transaction_state_log_segment_bytes: int = 100 * 1024 * 1024
    #: Of the cluster's ``__transaction_state`` (``zookeeper.connect`` set); Kafka's defaults.
    transaction_state_log_replication_factor: int = 3
    transaction_state_log_min_isr: int = 2
    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 604_800_000
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    transaction_remove_expired_transaction_cleanup_interval_ms: int = 3_600_000
    fetch_max_bytes: int = 57_671_680
    max_incremental_fetch_session_cache_slots: int = 1000
    #: The other broker-level topic defaults given (``log.roll.ms``, ``compression.type``,
    #: ...): Kafka broker name -> canonical value.
    log_defaults: Mapping[str, str] = field(default_factory=dict)

    _INT_RANGES = {
        "node_id": (0, _INT32_MAX),
        "socket_request_max_bytes": (1, _INT32_MAX),
        "connections_max_idle_ms": (1, _INT64_MAX),
        "max_connections": (1, _INT32_MAX),
        "max_connections_per_ip": (0, _INT32_MAX),
        "num_recovery_threads_per_data_dir": (1, 1024),
        "queued_max_request_bytes": (-1, _INT64_MAX),
        "socket_send_buffer_bytes": (-1, _INT32_MAX),
        "socket_receive_buffer_bytes": (-1, _INT32_MAX),
        "num_partitions": (1, 100_000),
        "default_replication_factor": (1, 32767),
        "zookeeper_session_timeout_ms": (1, _INT32_MAX),
        "replica_lag_time_max_ms": (1, _INT64_MAX),
        "replica_high_watermark_checkpoint_interval_ms": (1, _INT64_MAX),
        "log_segment_bytes": (14, _INT32_MAX),
        "log_retention_ms": (-1, _INT64_MAX),
        "log_retention_bytes": (-1, _INT64_MAX),
        "log_flush_interval_messages": (-1, _INT64_MAX),
        "log_flush_interval_ms": (-1, _INT64_MAX),
        "log_flush_scheduler_interval_ms": (1, _INT64_MAX),
        "log_flush_offset_checkpoint_interval_ms": (1, _INT32_MAX),
        "producer_id_expiration_ms": (1, _INT32_MAX),
        "producer_id_expiration_check_interval_ms": (1, _INT32_MAX),
        "log_retention_check_interval_ms": (1, _INT64_MAX),
        "message_max_bytes": (0, _INT32_MAX),
        "log_cleaner_backoff_ms": (1, _INT64_MAX),
        "log_cleaner_dedupe_buffer_size": (1024, _INT64_MAX),
        "group_initial_rebalance_delay_ms": (0, _INT32_MAX),
        "group_min_session_timeout_ms": (1, _INT32_MAX),
        "group_max_session_timeout_ms": (1, _INT32_MAX),
        "offsets_topic_num_partitions": (1, 100_000),
        "offsets_topic_segment_bytes": (14, _INT32_MAX),
        "offsets_topic_replication_factor": (1, 32767),
        "transaction_state_log_replication_factor": (1, 32767),
        "transaction_state_log_min_isr": (1, 32767),
        "offsets_retention_minutes": (1, _INT32_MAX),
        "offsets_commit_timeout_ms": (1, _INT32_MAX),
        "offset_metadata_max_bytes": (0, _INT32_MAX),
        "transaction_state_log_num_partitions": (1, 100_000),
        "transaction_state_log_segment_bytes": (14, _INT32_MAX),
        "transaction_max_timeout_ms": (1, _INT32_MAX),
        "transactional_id_expiration_ms": (1, _INT32_MAX),
        "transaction_abort_timed_out_transaction_cleanup_interval_ms": (1, _INT32_MAX),
        "transaction_remove_expired_transaction_cleanup_interval_ms": (1, _INT32_MAX),
        "fetch_max_bytes": (1024, _INT32_MAX),
        "leader_imbalance_check_interval_seconds": (1, _INT32_MAX),
        "leader_imbalance_per_broker_percentage": (0, 100),
        "max_incremental_fetch_session_cache_slots": (0, _INT32_MAX),
    }
    _BOOLS = ("auto_create_topics_enable", "delete_topic_enable", "log_cleaner_enable",
              "unclean_leader_election_enable", "auto_leader_rebalance_enable")
    #: Kafka's alternative spellings of some settings.
    _ALIASES = {
        "log.dir": "log.dirs",
        "broker.id": "node.id",
    }

    def __post_init__(self) -> None:
        for name, (lo, hi) in self._INT_RANGES.items():
            object.__setattr__(self, name, _to_int(_kafka(name), getattr(self, name), lo, hi))
        for name in self._BOOLS:
            object.__setattr__(self, name, _to_bool(_kafka(name), getattr(self, name)))
        parse_listener(self.listeners)
        overrides = parse_connection_overrides(self.max_connections_per_ip_overrides)
        if self.max_connections_per_ip == 0 and not overrides:
            raise InvalidConfigError("max.connections.per.ip=0 refuses every connection: set "
                                     "max.connections.per.ip.overrides for the hosts to admit, or a "
                                     "positive max.connections.per.ip")
        if self.advertised_listeners is not None:
            parse_listener(self.advertised_listeners)
        if self.zookeeper_connect:
            from pylog.cluster.zookeeper import parse_connect_string
            parse_connect_string(self.zookeeper_connect)
        if self.default_replication_factor > 1 and not self.zookeeper_connect:
            raise InvalidConfigError(f"default.replication.factor={self.default_replication_factor} needs a "
                                     "cluster: set zookeeper.connect (a single node holds one replica)")
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms:
            raise InvalidConfigError("group.min.session.timeout.ms is larger than group.max.session.timeout.ms")
        if not isinstance(self.log_dirs, str) or not self.log_dirs or "," in self.log_dirs:
            raise InvalidConfigError(f"log.dirs={self.log_dirs!r}: give one directory")
        defaults = {}
        for key, raw in dict(self.log_defaults or {}).items():
            if key not in TOPIC_DEFAULT_SYNONYMS or _field_name(key) in _FIELD_NAMES:
                raise InvalidConfigError(f"log_defaults: {key!r} is not a broker-level topic default")
            defaults[key] = _topic_default(key, raw)
        object.__setattr__(self, "log_defaults", defaults)

    # -- construction --------------------------------------------------------------

    @classmethod
    def kafka_names(cls) -> list[str]:
        """Every setting's Kafka name (the topic defaults' broker names, and the hours and
        minutes spellings of the ms ones, included)."""
        names = {_kafka(f.name) for f in dataclasses.fields(cls) if f.name != "log_defaults"}
        return sorted(names | set(TOPIC_DEFAULT_SYNONYMS) | set(_UNIT_SYNONYMS))

    @classmethod
    def from_kafka(cls, props: Mapping[str, Any], *, warn: bool = True) -> ServerConfig:
        """Build from Kafka's dotted names (string or typed values).

        A Kafka broker config pylog has no setting for is ignored, with one WARN line per
        name when ``warn`` is true.

        Raises
        ------
        InvalidConfigError
            An unknown name or a bad value; the message names the setting.
        """
        known = _FIELD_NAMES
        values: dict[str, Any] = {}
        log_defaults: dict[str, str] = {}
        units: dict[str, tuple[int, Any, str, int]] = {}
        props = dict(props)
        for key in props:
            if not isinstance(key, str):
                raise InvalidConfigError(f"config names are strings, got {key!r}")
        props = {k.strip(): v for k, v in props.items()}
        if "listeners" in props or "advertised.listeners" in props:
            props = _choose_listener(props, warn)
        for k, raw in props.items():
            if k in _LISTENER_KEYS:
                continue
            if k in _UNIT_SYNONYMS:
                target, unit, priority = _UNIT_SYNONYMS[k]
                if target not in props and (target not in units or units[target][0] > priority):
                    units[target] = (priority, raw, k, unit)
                continue
            k = cls._ALIASES.get(k) or k
            name = _field_name(k)
            if name in known and name != "log_defaults":
                values[name] = raw.strip() if isinstance(raw, str) else raw
            elif k in TOPIC_DEFAULT_SYNONYMS:
                log_defaults[k] = _topic_default(k, raw)
            elif _is_kafka_broker_config(k):
                if warn:
                    _log.warning("server config %s=%s is a Kafka broker config with no meaning in pylog; "
                                 "ignored", k, raw)
            else:
                import difflib  # imported on first use: not on the start-up path of `pylog serve` (#17)

                close = difflib.get_close_matches(k, cls.kafka_names(), n=3, cutoff=0.75)
                hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
                raise InvalidConfigError(f"unknown server config {k!r}{hint}: it is neither a pylog "
                                         "setting nor one of Kafka's broker configs")
        for target, (_prio, raw, k, unit) in units.items():
            ms = -1 if str(raw).strip() == "-1" else _to_int(k, raw, 0, _INT64_MAX // unit) * unit
            if _field_name(target) in known:
                values[_field_name(target)] = ms
            else:
                log_defaults[target] = _topic_default(target, ms)
        # The unit spellings as given (Kafka describes each under its own name: with only
        # log.retention.hours set, log.retention.ms itself stays null).
        given_units = {k: str(_to_int(k, raw, -1, _INT64_MAX)) for k, raw in props.items() if k in _UNIT_SYNONYMS}
        folded = frozenset(t for t in units if t not in props)
        for optional in ("advertised_listeners", "zookeeper_connect", "broker_rack"):
            if values.get(optional) in ("",):
                values[optional] = None
        made = cls(**values, log_defaults=log_defaults)
        object.__setattr__(made, "_explicit", frozenset([_kafka(n) for n in values] + list(log_defaults)))
        object.__setattr__(made, "_given_units", given_units)
        object.__setattr__(made, "_folded", folded)
        return made

    @property
    def explicit(self) -> frozenset[str]:
        """Kafka names of the settings given explicitly (file, flags, overrides); for a
        ServerConfig built directly, those that differ from the defaults."""
        got = getattr(self, "_explicit", None)
        if got is None:
            base = _defaults().to_kafka()
            got = frozenset([k for k, v in self.to_kafka().items() if v != base.get(k)] + list(self.log_defaults))
            object.__setattr__(self, "_explicit", got)
        return got

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    def to_kafka(self) -> dict[str, str]:
        """Every setting under its Kafka name, as strings (DescribeConfigs of the broker):
        the topic defaults not given show Kafka's topic default."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "log_defaults":
                continue
            v = getattr(self, f.name)
            if v is None:
                v = ""
            elif isinstance(v, bool):
                v = str(v).lower()
            out[_kafka(f.name)] = str(v)
        for key, topic_name in TOPIC_DEFAULT_SYNONYMS.items():
            if key not in out:
                out[key] = self.log_defaults.get(key, TOPIC_CONFIGS[topic_name].default)
        return dict(sorted(out.items()))

    def explicit_kafka(self) -> dict[str, str]:
        """The settings given explicitly, under their Kafka names, as strings."""
        values = self.to_kafka()
        return {k: values[k] for k in sorted(self.explicit)}

    def static_layer(self) -> dict[str, str]:
        """The settings given explicitly as Kafka's static layer holds them: under the
        name they were given by, so ``log.retention.hours=24`` is that, not a
        ``log.retention.ms`` (DescribeConfigs of the broker, its synonyms)."""
        folded = getattr(self, "_folded", frozenset())
        out = {k: v for k, v in self.explicit_kafka().items() if k not in folded}
        out.update(getattr(self, "_given_units", {}))
        return out

    def topic_defaults(self) -> dict[str, str]:
        """Broker-level defaults of topic configs, by topic config name, for the settings
        given explicitly (a topic describes those as set by the broker, the rest as
        Kafka's defaults).  The flush settings' -1 (leave flushing to the OS) is no default."""
        values = self.to_kafka()
        out = {}
        for key in self.explicit:
            topic_name = TOPIC_DEFAULT_SYNONYMS.get(key)
            if topic_name is None:
                continue
            if topic_name.startswith("flush.") and values[key] == "-1":
                continue
            out[topic_name] = normalize(topic_name, values[key])
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


_DEFAULTS: list[ServerConfig] = []


def _defaults() -> ServerConfig:
    if not _DEFAULTS:
        _DEFAULTS.append(ServerConfig())
    return _DEFAULTS[0]


def _field_name(kafka_name: str) -> str:
    return kafka_name.replace(".", "_").replace("-", "_")


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(ServerConfig))


def _is_kafka_broker_config(name: str) -> bool:
    # Kafka's broker config table is read on first use: a start whose settings are all
    # pylog's does not pay for loading it (#17).
    from pylog.server.kafka_config_names import is_kafka_broker_config

    return is_kafka_broker_config(name)


def _topic_default(key: str, raw: Any) -> str:
    """A broker-level topic default (``log.roll.ms``) checked as its topic config."""
    try:
        return normalize(TOPIC_DEFAULT_SYNONYMS[key], raw)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"{key}={raw!r} is invalid: {exc}") from None


def _choose_listener(props: dict[str, Any], warn: bool) -> dict[str, Any]:
    """Of Kafka's listener lists (``listeners=PLAINTEXT://:9092,CONTROLLER://:9093``), keep
    the one client listener pylog serves: ``inter.broker.listener.name``'s if it is set,
    else the first that is not a ``controller.listener.names`` one.  It must speak
    PLAINTEXT (by its name or ``listener.security.protocol.map``).  The rest are dropped
    with a WARN; ``advertised.listeners`` keeps the entry of the same listener name."""
    def entries(key: str) -> list[tuple[str | None, str]]:
        text = str(props.get(key) or "")
        out = []
        for item in (x.strip() for x in text.split(",")):
            if not item:
                continue
            scheme, sep, _rest = item.partition("://")
            out.append((scheme.upper() if sep else None, item))
        return out

    proto_map = {}
    for pair in str(props.get("listener.security.protocol.map") or "").split(","):
        name, sep, proto = pair.partition(":")
        if sep:
            proto_map[name.strip().upper()] = proto.strip().upper()
    controllers = {x.strip().upper() for x in str(props.get("controller.listener.names") or "").split(",")
                   if x.strip()}
    wanted = str(props.get("inter.broker.listener.name") or "").strip().upper() or None
    out = dict(props)
    listeners = entries("listeners")
    chosen_name: str | None = None
    if len(listeners) > 1 or any(n is not None for n, _ in listeners):
        pick = [e for e in listeners if wanted is not None and e[0] == wanted]
        pick = pick or [e for e in listeners if e[0] not in controllers]
        if not pick:
            raise InvalidConfigError(f"listeners={props['listeners']!r}: no client listener "
                                     "(every one is a controller listener)")
        chosen_name, item = pick[0]
        proto = proto_map.get(chosen_name or "", chosen_name or "PLAINTEXT")
        if proto not in ("PLAINTEXT", "TCP"):
            raise InvalidConfigError(f"listeners: {item!r} speaks {proto}; pylog serves PLAINTEXT only")
        rest = item.split("://", 1)[1] if "://" in item else item
        out["listeners"] = f"PLAINTEXT://{rest}"
        dropped = [i for _n, i in listeners if i != item]
        if dropped and warn:
            _log.warning("server config listeners: serving %s only; %s ignored (pylog runs one broker "
                         "with one PLAINTEXT listener and no KRaft controller)", item, ", ".join(dropped))
    advertised = entries("advertised.listeners")
    if len(advertised) > 1 or any(n is not None for n, _ in advertised):
        same = [i for n, i in advertised if n == chosen_name] if chosen_name else []
        pick2 = same or [i for n, i in advertised if n not in controllers] or [advertised[0][1]]
        rest = pick2[0].split("://", 1)[1] if "://" in pick2[0] else pick2[0]
        out["advertised.listeners"] = f"PLAINTEXT://{rest}"
        dropped = [i for _n, i in advertised if i != pick2[0]]
        if dropped and warn:
            _log.warning("server config advertised.listeners: advertising %s only; %s ignored",
                         pick2[0], ", ".join(dropped))
    return out
