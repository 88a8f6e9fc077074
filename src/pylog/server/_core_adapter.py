"""From the server's settings to the broker core, and small conversions between the core's
value types and the wire's.

Nothing here implements a semantic: :func:`open_broker` maps ``pylog serve``'s Kafka
broker configs onto :class:`pylog.broker.core.BrokerConfig`; the rest converts (topic id
strings to UUIDs) or describes the server's own settings (DescribeConfigs of the broker
resource, which lists the server's configs).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Iterable

from pylog.errors import InvalidConfigError, InvalidRequestError

__all__ = ["open_broker", "broker_config_for", "topic_uuid", "BrokerConfigEntry", "describe_server_configs"]

ZERO_UUID = uuid.UUID(int=0)


def broker_config_for(config: Any) -> Any:
    """The :class:`~pylog.broker.core.BrokerConfig` for a :class:`ServerConfig`."""
    from pylog.broker.core import BrokerConfig
    from pylog.broker.group import GroupCoordinatorConfig

    # Broker-level defaults of topic configs, for the settings given explicitly (so a topic
    # describes them as STATIC_BROKER_CONFIG, and everything else as DEFAULT_CONFIG).
    explicit = config.explicit
    candidates = {
        "log.segment.bytes": ("segment.bytes", config.log_segment_bytes),
        "log.retention.ms": ("retention.ms", config.log_retention_ms),
        "log.retention.bytes": ("retention.bytes", config.log_retention_bytes),
        "message.max.bytes": ("max.message.bytes", config.message_max_bytes),
        "log.flush.interval.messages": ("flush.messages", config.log_flush_interval_messages),
        "log.flush.interval.ms": ("flush.ms", config.log_flush_interval_ms),
    }
    topic_defaults: dict[str, Any] = {}
    for broker_name, (topic_name, value) in candidates.items():
        if broker_name in explicit and not (topic_name.startswith("flush.") and value < 0):
            topic_defaults[topic_name] = value
    group = GroupCoordinatorConfig(
        min_session_timeout_ms=config.group_min_session_timeout_ms,
        max_session_timeout_ms=config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        offset_metadata_max_bytes=config.offset_metadata_max_bytes,
        offsets_retention_ms=config.offsets_retention_minutes * 60_000,
        offsets_topic_num_partitions=config.offsets_topic_num_partitions)
    return BrokerConfig(
        node_id=config.node_id,
        num_partitions=config.num_partitions,
        default_replication_factor=1,
        # The server creates topics itself on Metadata and Produce only: the core's switch
        # would also create them on Fetch or ListOffsets, which Kafka does not.
        auto_create_topics_enable=False,
        offsets_topic_num_partitions=config.offsets_topic_num_partitions,
        topic_defaults=topic_defaults,
        group=group,
        log_retention_check_interval_ms=config.log_retention_check_interval_ms,
        log_flush_scheduler_interval_ms=config.log_flush_scheduler_interval_ms,
        log_cleaner_enable=config.log_cleaner_enable)


def open_broker(config: Any) -> Any:
    """Open the broker core over ``config.log_dirs`` (recovering it); its background
    thread runs flushes, retention, checkpoints and group timeouts off the event loop."""
    from pylog.broker.core import Broker

    return Broker(config.log_dirs, broker_config_for(config), background=True)


def topic_uuid(topic_id: str | None) -> uuid.UUID:
    """A topic id in Kafka's base64 form as the UUID the wire carries."""
    if not topic_id:
        return ZERO_UUID
    try:
        raw = base64.urlsafe_b64decode(topic_id + "=" * (-len(topic_id) % 4))
    except (ValueError, TypeError):
        return ZERO_UUID
    return uuid.UUID(bytes=raw) if len(raw) == 16 else ZERO_UUID


class BrokerConfigEntry:
    """A DescribeConfigs entry of the broker resource (the server's settings)."""

    __slots__ = ("name", "value", "read_only", "source", "is_sensitive", "type", "documentation",
                 "synonyms", "is_default")

    def __init__(self, name: str, value: str, source: int, type_: int) -> None:
        self.name = name
        self.value = value
        self.read_only = True
        self.source = source
        self.is_default = source == 5
        self.is_sensitive = False
        self.type = type_
        self.documentation = None
        self.synonyms = ()


def describe_server_configs(server_config: Any, explicit: Iterable[str], node_id: int, resource_name: str,
                            keys: Iterable[str] | None) -> list[BrokerConfigEntry]:
    """Every setting of ``pylog serve`` as a read-only broker config: STATIC_BROKER_CONFIG
    (4) for those set on the command line or in the config file, DEFAULT_CONFIG (5) for
    the rest."""
    if resource_name not in ("", str(node_id)):
        raise InvalidRequestError(f"broker {resource_name!r} is not this broker (node {node_id})")
    explicit = set(explicit)
    values = server_config.to_kafka()
    names = sorted(values) if keys is None else list(keys)
    out = []
    for name in names:
        if name not in values:
            raise InvalidConfigError(f"unknown broker config {name!r}")
        v = values[name]
        t = 1 if v in ("true", "false") else (5 if _is_int(v) else 2)
        out.append(BrokerConfigEntry(name, v, 4 if name in explicit else 5, t))
    return out


def _is_int(v: str) -> bool:
    try:
        int(v)
    except ValueError:
        return False
    return True
