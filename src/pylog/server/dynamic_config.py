"""Dynamic broker configs: broker settings changed at run time with AlterConfigs /
IncrementalAlterConfigs on the BROKER resource, kept across restarts, and described with
where each value comes from.

Layers, highest priority first, as in Kafka:

==================================  =============================  =======================
layer                               set by                         DescribeConfigs source
==================================  =============================  =======================
per-broker dynamic                  resource name = the node id    DYNAMIC_BROKER_CONFIG (2)
cluster-wide default dynamic        resource name ``""``           DYNAMIC_DEFAULT_BROKER_CONFIG (3)
static                              server.properties, --override  STATIC_BROKER_CONFIG (4)
default                             pylog's (Kafka's) defaults     DEFAULT_CONFIG (5)
==================================  =============================  =======================

What may change at run time is what Kafka lets change and pylog has
(:data:`DYNAMIC_CONFIGS`): the broker-level topic defaults (Kafka's DynamicLogConfig: the
first broker name of each topic config, ``log.retention.ms``, ``log.segment.bytes``,
``log.roll.ms``, ``message.max.bytes``, ``log.cleanup.policy``, ``compression.type``, ...;
not Kafka 3's ``log.message.format.version`` and the like), which take effect for every topic that does not
override them, existing logs and new ones; the cleaner's ``log.cleaner.backoff.ms`` and
``log.cleaner.dedupe.buffer.size``; and the connection caps ``max.connections``,
``max.connections.per.ip`` and ``max.connections.per.ip.overrides`` (Kafka's
ConnectionQuotas: a new cap applies to the next connection accepted; connections already
open stay open even when they are now above it, as in Kafka; host names in the overrides
are resolved when the change is applied).  Any other Kafka broker
config is read-only, as ``num.partitions``, ``log.retention.hours`` or ``log.dirs`` are in
Kafka: altering it is INVALID_REQUEST "Cannot update these configs dynamically", and so is
a bad value (Kafka's KRaft brokers answer INVALID_REQUEST for a dynamic broker config that
fails validation, KAFKA-13609); a name that is not a Kafka broker config at all is
INVALID_CONFIG.

DescribeConfigs of the broker lists every config Apache Kafka 4.4 lists (the generated
table :mod:`pylog.server.kafka_broker_defaults`), with Kafka's types, sensitivity and
synonym chains (``log.retention.ms`` <- ``.minutes`` <- ``.hours``, ...); a config pylog
gives no meaning is Kafka's default, DEFAULT_CONFIG, read-only.  Documentation is pylog's
own one line for the topic defaults, else null.

On disk
-------
``<log.dirs>/dynamic-broker-configs.json``, Kafka keeping the same in its metadata log
(ConfigRecords of BROKER resources)::

    {"version": 1, "default": {"log.retention.ms": "3600000"},
     "brokers": {"0": {"message.max.bytes": "2000000"}}}

Values are canonical strings; only this node's entry of ``brokers`` applies.  Written
with :func:`pylog.storage.checkpoint.atomic_write` (temporary file, fsync, rename, fsync
of the directory) before the change is applied, so a crash leaves the old file or the
new one.  Read strictly: a file that is not this exact shape, or holds a value that is
no longer valid, is reported with a WARN and ignored (the server starts with its static
configs; the next broker AlterConfigs replaces the file).

Threads
-------
:meth:`DynamicBrokerConfigs.alter` serialises changes with a lock (AlterConfigs requests
run off the event loop, possibly two at once); readers use the current immutable
snapshot (:attr:`DynamicBrokerConfigs.effective`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Callable, Iterable, Mapping

from pylog.broker.topic_config import ConfigEntry, ConfigSource, ConfigType, TOPIC_CONFIGS
from pylog.errors import InvalidConfigError, InvalidRequestError
from pylog.server.config import TOPIC_DEFAULT_SYNONYMS, ServerConfig
from pylog.server.kafka_broker_defaults import KAFKA_BROKER_CONFIGS, KAFKA_BROKER_SYNONYMS
from pylog.storage.checkpoint import atomic_write

__all__ = ["DYNAMIC_CONFIGS", "DYNAMIC_CONFIG_FILE", "DynamicBrokerConfigs"]

_log = logging.getLogger("pylog.server.config")

DYNAMIC_CONFIG_FILE = "dynamic-broker-configs.json"
_VERSION = 1
_MAX_FILE_BYTES = 1 << 20

#: Broker configs pylog lets change at run time (Kafka's "cluster-wide" update mode: as
#: a cluster default or for one broker): the topic defaults Kafka 4.4 still has (not
#: Kafka 3's log.message.format.version, .downconversion.enable,
#: .timestamp.difference.max.ms, which pylog reads from a config file only).
DYNAMIC_CONFIGS: frozenset[str] = frozenset(
    [k for k in TOPIC_DEFAULT_SYNONYMS if k in KAFKA_BROKER_CONFIGS and KAFKA_BROKER_CONFIGS[k][2]]
    + ["log.cleaner.backoff.ms", "log.cleaner.dedupe.buffer.size", "max.connections",
       "max.connections.per.ip", "max.connections.per.ip.overrides"])

_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3


class DynamicBrokerConfigs:
    """The static settings of a server plus its dynamic layers, and their effective
    combination.

    Parameters
    ----------
    static : ServerConfig
        The settings from the config file and the command line.
    default, per_broker : mapping of Kafka name to canonical string
        The cluster-wide and this broker's dynamic configs.
    """

    def __init__(self, static: ServerConfig, default: Mapping[str, str] | None = None,
                 per_broker: Mapping[str, str] | None = None) -> None:
        self.static = static
        self.path = os.path.join(static.log_dirs, DYNAMIC_CONFIG_FILE)
        self.default = dict(default or {})
        self.per_broker = dict(per_broker or {})
        self._lock = threading.Lock()
        self._other_brokers: dict[str, dict[str, str]] = {}
        self.effective = self._combine(self.default, self.per_broker)

    # -- loading -------------------------------------------------------------------

    @classmethod
    def load(cls, static: ServerConfig) -> DynamicBrokerConfigs:
        """The static settings with the dynamic configs persisted in ``log.dirs``.  A
        damaged or invalid file is logged (WARN) and ignored; never raises for it."""
        made = cls(static)
        try:
            with open(made.path, "rb") as f:
                raw = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return made
        except OSError as exc:
            _log.warning("cannot read %s (%s); starting with the static broker configs", made.path,
                         exc.strerror or exc)
            return made
        try:
            default, brokers = _parse(raw)
            mine = brokers.pop(str(static.node_id), {})
            for layer in (default, mine):
                for name in layer:
                    if name not in DYNAMIC_CONFIGS:
                        raise ValueError(f"{name!r} is not a dynamic broker config")
            effective = made._combine(default, mine)
        except (ValueError, InvalidConfigError) as exc:
            _log.warning("%s is damaged or invalid (%s); ignoring it and starting with the static broker "
                         "configs (the next AlterConfigs of a broker resource rewrites it)", made.path, exc)
            return made
        made.default, made.per_broker, made.effective = default, mine, effective
        made._other_brokers = brokers
        if default or mine:
            _log.info("dynamic broker configs from %s: cluster default %s; broker %d %s", made.path,
                      _show(default), static.node_id, _show(mine))
        return made

    def _combine(self, default: Mapping[str, str], per_broker: Mapping[str, str]) -> ServerConfig:
        """The effective ServerConfig of static < default < per-broker (raises
        InvalidConfigError naming a bad setting)."""
        props = {**self.static.explicit_kafka(), **default, **per_broker}
        return ServerConfig.from_kafka(props, warn=False)

    # -- what the broker core sees -----------------------------------------------------

    def source_of(self, name: str) -> int:
        if name in self.per_broker:
            return ConfigSource.DYNAMIC_BROKER_CONFIG
        if name in self.default:
            return ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
        if name in self.static.explicit:
            return ConfigSource.STATIC_BROKER_CONFIG
        return ConfigSource.DEFAULT_CONFIG

    def topic_defaults(self) -> tuple[dict[str, str], dict[str, int]]:
        """Broker-level topic defaults of the effective settings (by topic config name)
        and where each comes from."""
        values = self.effective.topic_defaults()
        by_topic = {t: b for b, t in TOPIC_DEFAULT_SYNONYMS.items()}
        return values, {t: self.source_of(by_topic[t]) for t in values}

    # -- DescribeConfigs -----------------------------------------------------------

    def describe(self, resource_name: str, names: Iterable[str] | None, *,
                 include_synonyms: bool = False, include_documentation: bool = False) -> list[ConfigEntry]:
        """DescribeConfigs of the BROKER resource, as Kafka answers it: this node's id
        describes every broker config Kafka has (:data:`KAFKA_BROKER_CONFIGS`); ``""``
        (the cluster default) describes the cluster-wide dynamic configs only.  A
        requested name that is no broker config is left out, as Kafka leaves it out.

        Each entry's value and source come from its synonyms (Kafka's ConfigHelper): the
        layers per-broker dynamic, cluster-default dynamic, static and default, each
        listing the members of the config's chain it holds (``log.retention.ms``,
        ``.minutes``, ``.hours``), highest layer first, from the config's own name on.  So
        with only ``log.retention.hours`` given, ``log.retention.ms`` is null with no
        synonyms, and ``log.retention.hours`` is static.  Configs pylog does not implement
        are Kafka's defaults (DEFAULT_CONFIG), read-only.

        Raises
        ------
        InvalidRequestError
            The name is neither ``""`` nor this node's id.
        """
        per_broker = self._check_resource(resource_name)
        layers: list[tuple[Mapping[str, str | None], int]]
        if per_broker:
            static = self.static.static_layer()
            if "node.id" in static:
                static["broker.id"] = static["node.id"]  # Kafka's broker.id is its node.id
            layers = [(self.per_broker, ConfigSource.DYNAMIC_BROKER_CONFIG),
                      (self.default, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
                      (static, ConfigSource.STATIC_BROKER_CONFIG),
                      (_default_layer(self.static.log_dirs), ConfigSource.DEFAULT_CONFIG)]
        else:
            # Kafka 4.4 lists the cluster-wide dynamic layer only here.
            layers = [(self.default, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)]
        listed = sorted(KAFKA_BROKER_CONFIGS) if per_broker else sorted(self.default)
        if names is not None:
            wanted = set(names)
            listed = [n for n in listed if n in wanted]
        out = []
        for name in listed:
            _default, ctype, _dynamic, sensitive = KAFKA_BROKER_CONFIGS[name]
            chain = KAFKA_BROKER_SYNONYMS.get(name, (name,))
            found = [(s, layer[s], source) for layer, source in layers for s in chain
                     if layer.get(s) is not None]
            while found and found[0][0] != name:
                found.pop(0)
            value = found[0][1] if found else None
            source = found[0][2] if found else ConfigSource.DEFAULT_CONFIG
            if sensitive:
                value = None
                found = [(s, None, src) for s, _v, src in found]
            out.append(ConfigEntry(
                name=name, value=value, source=source, is_default=source == ConfigSource.DEFAULT_CONFIG,
                read_only=name not in DYNAMIC_CONFIGS, is_sensitive=sensitive, type=ctype,
                documentation=_documentation(name) if include_documentation else "",
                synonyms=tuple(found) if include_synonyms else ()))
        return out

    # -- AlterConfigs / IncrementalAlterConfigs ------------------------------------

    def alter(self, resource_name: str, ops: list[tuple[str, int, str | None]], *, incremental: bool,
              validate_only: bool, apply: Callable[[ServerConfig, "DynamicBrokerConfigs"], None],
              check: Callable[[ServerConfig, "DynamicBrokerConfigs"], None]) -> None:
        """Change the cluster-default (``""``) or this broker's layer.

        AlterConfigs (``incremental=False``) replaces the layer with the SET entries of
        ``ops``; IncrementalAlterConfigs applies SET / DELETE / APPEND / SUBTRACT (the last
        two on list configs).  ``check(effective, self)`` may refuse the result (raising
        InvalidConfigError) before anything changes; then the file is written and
        ``apply(effective, self)`` puts it into force.  ``validate_only`` checks only.

        Raises
        ------
        InvalidRequestError
            A wrong resource name, a config that cannot change at run time, or a bad value.
        InvalidConfigError
            A name that is not a Kafka broker config, or APPEND/SUBTRACT on a non-list.
        """
        per_broker = self._check_resource(resource_name)
        with self._lock:
            layer = dict(self.per_broker if per_broker else self.default)
            new_layer = {} if not incremental else dict(layer)
            seen = set()
            for name, op, value in ops:
                if name in seen:
                    raise InvalidRequestError(f"config {name!r} is given twice")
                seen.add(name)
                _check_name(name)
                if op == _SET:
                    if value is None:
                        raise InvalidRequestError(f"{name}: a null value (use DELETE to remove it)")
                    new_layer[name] = value
                elif op == _DELETE:
                    new_layer.pop(name, None)
                elif op in (_APPEND, _SUBTRACT):
                    topic_name = TOPIC_DEFAULT_SYNONYMS.get(name)
                    if topic_name is None or TOPIC_CONFIGS[topic_name].type != ConfigType.LIST:
                        raise InvalidConfigError(f"config value {'append' if op == _APPEND else 'subtract'} "
                                                 f"is not allowed for config key: {name}")
                    current = layer.get(name, TOPIC_CONFIGS[topic_name].default)
                    items = [x for x in current.split(",") if x]
                    given = [x.strip() for x in (value or "").split(",") if x.strip()]
                    if op == _APPEND:
                        items += [x for x in given if x not in items]
                    else:
                        items = [x for x in items if x not in given]
                    new_layer[name] = ",".join(items)
                else:
                    raise InvalidRequestError(f"unknown config operation {op} for {name!r}")
            try:
                canonical = {n: _canonical(n, v) for n, v in new_layer.items()}
                default = self.default if per_broker else canonical
                mine = canonical if per_broker else self.per_broker
                effective = self._combine(default, mine)
                trial = DynamicBrokerConfigs(self.static, default, mine)
                check(effective, trial)
            except InvalidConfigError as exc:
                raise InvalidRequestError(str(exc)) from None
            if validate_only:
                return
            self._write(default, mine)
            self.default, self.per_broker, self.effective = dict(default), dict(mine), effective
            apply(effective, self)

    def _check_resource(self, name: str) -> bool:
        """True for this broker's resource, False for the cluster default."""
        if name == "":
            return False
        try:
            node = int(name)
        except ValueError:
            raise InvalidRequestError(f"Node id must be an integer, but it is: {name}") from None
        if node != self.static.node_id:
            raise InvalidRequestError(
                f"Unexpected broker id, expected {self.static.node_id} or empty string, but received {name}")
        return True

    def _write(self, default: Mapping[str, str], mine: Mapping[str, str]) -> None:
        brokers = {k: dict(sorted(v.items())) for k, v in self._other_brokers.items()}
        if mine:
            brokers[str(self.static.node_id)] = dict(sorted(mine.items()))
        doc = {"version": _VERSION, "default": dict(sorted(default.items())), "brokers": brokers}
        atomic_write(self.path, json.dumps(doc, indent=1).encode() + b"\n")


# -- helpers ---------------------------------------------------------------------------


def _parse(raw: bytes) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    if len(raw) > _MAX_FILE_BYTES:
        raise ValueError(f"larger than {_MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"version", "default", "brokers"}:
        raise ValueError("expected an object with exactly version, default and brokers")
    if doc["version"] != _VERSION or isinstance(doc["version"], bool):
        raise ValueError(f"unknown version {doc['version']!r}")

    def layer(x: Any, where: str) -> dict[str, str]:
        if not isinstance(x, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in x.items()):
            raise ValueError(f"{where} must map config names to strings")
        return dict(x)

    default = layer(doc["default"], "default")
    if not isinstance(doc["brokers"], dict):
        raise ValueError("brokers must be an object")
    brokers = {}
    for node, values in doc["brokers"].items():
        if not node.isdigit():
            raise ValueError(f"broker id {node!r} is not a number")
        brokers[node] = layer(values, f"brokers[{node}]")
    return default, brokers


def _check_name(name: str) -> None:
    if name in DYNAMIC_CONFIGS:
        return
    from pylog.server.kafka_config_names import is_kafka_broker_config  # first use, not at start-up (#17)

    if is_kafka_broker_config(name) or name in ServerConfig.kafka_names():
        raise InvalidRequestError(f"Cannot update these configs dynamically: {name} (it is read-only: set it "
                                  "in server.properties or with --override and restart)")
    raise InvalidConfigError(f"unknown broker config {name!r}")


def _canonical(name: str, value: str) -> str:
    """The value as it is stored (a topic default's canonical form; else trimmed)."""
    topic_name = TOPIC_DEFAULT_SYNONYMS.get(name)
    if topic_name is not None:
        from pylog.broker.topic_config import normalize
        try:
            return normalize(topic_name, value)
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"{name}={value!r} is invalid: {exc}") from None
    return value.strip()


_DEFAULT_LAYERS: dict[str, dict[str, str | None]] = {}


def _default_layer(log_dirs: str) -> dict[str, str | None]:
    """Kafka's default layer as pylog has it: pylog's own default for what pylog
    implements, Kafka's default (the generated table) for the rest and for the members of
    a synonym chain (whose head, e.g. ``log.retention.ms``, has no default of its own:
    pylog's effective default is the chain's, 168 hours)."""
    got = _DEFAULT_LAYERS.get(log_dirs)
    if got is None:
        got = {name: row[0] for name, row in KAFKA_BROKER_CONFIGS.items()}
        for name, value in ServerConfig(log_dirs=log_dirs).to_kafka().items():
            # An unset optional setting (broker.rack, advertised.listeners: None, which
            # to_kafka spells "") stays null, as Kafka describes it.
            if name in got and name not in KAFKA_BROKER_SYNONYMS and not (value == "" and got[name] is None):
                got[name] = value
        got["log.flush.scheduler.interval.ms"] = str(ServerConfig.log_flush_scheduler_interval_ms)
        got["broker.id"] = got["node.id"]
        _DEFAULT_LAYERS.clear()  # one data dir per server: keep one entry
        _DEFAULT_LAYERS[log_dirs] = got
    return got


def _documentation(name: str) -> str:
    topic_name = TOPIC_DEFAULT_SYNONYMS.get(name)
    if topic_name is not None:
        return f"default {topic_name} of every topic: {TOPIC_CONFIGS[topic_name].doc}"
    return ""


def _show(layer: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(layer.items())) or "(none)"
