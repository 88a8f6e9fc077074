"""From the server's settings to the broker core, and small conversions between the core's
value types and the wire's.

Nothing here implements a semantic: :func:`open_broker` maps ``pylog serve``'s Kafka
broker configs onto :class:`pylog.broker.core.BrokerConfig`; the rest converts (topic id
strings to UUIDs).  The broker resource's configs are :mod:`pylog.server.dynamic_config`'s.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Mapping

from pylog.protocol.schema import zero_uuid

if TYPE_CHECKING:
    import uuid

__all__ = ["open_broker", "broker_config_for", "topic_uuid", "zero_uuid"]


def broker_config_for(config: Any, topic_default_sources: Mapping[str, int] | None = None) -> Any:
    """The :class:`~pylog.broker.core.BrokerConfig` for a :class:`ServerConfig`
    (``topic_default_sources``: where each broker-level topic default comes from, when
    dynamic broker configs set some)."""
    from pylog.broker.core import BrokerConfig
    from pylog.broker.group import GroupCoordinatorConfig
    from pylog.broker.txn_coordinator import TransactionCoordinatorConfig

    # Broker-level defaults of topic configs, for the settings given explicitly (so a topic
    # describes them as set by the broker, and everything else as DEFAULT_CONFIG).
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
        offsets_topic_segment_bytes=config.offsets_topic_segment_bytes,
        log_flush_offset_checkpoint_interval_ms=config.log_flush_offset_checkpoint_interval_ms,
        producer_id_expiration_ms=config.producer_id_expiration_ms,
        producer_id_expiration_check_interval_ms=config.producer_id_expiration_check_interval_ms,
        topic_defaults=config.topic_defaults(),
        topic_default_sources=dict(topic_default_sources or {}),
        group=group,
        txn=TransactionCoordinatorConfig(
            transaction_state_log_num_partitions=config.transaction_state_log_num_partitions,
            transaction_state_log_segment_bytes=config.transaction_state_log_segment_bytes,
            transaction_max_timeout_ms=config.transaction_max_timeout_ms,
            transactional_id_expiration_ms=config.transactional_id_expiration_ms,
            transaction_abort_timed_out_transaction_cleanup_interval_ms=(
                config.transaction_abort_timed_out_transaction_cleanup_interval_ms),
            transaction_remove_expired_transaction_cleanup_interval_ms=(
                config.transaction_remove_expired_transaction_cleanup_interval_ms)),
        log_retention_check_interval_ms=config.log_retention_check_interval_ms,
        log_flush_scheduler_interval_ms=config.log_flush_scheduler_interval_ms,
        log_cleaner_enable=config.log_cleaner_enable,
        log_cleaner_backoff_ms=config.log_cleaner_backoff_ms,
        log_cleaner_dedupe_buffer_size=config.log_cleaner_dedupe_buffer_size,
        num_recovery_threads_per_data_dir=config.num_recovery_threads_per_data_dir)


def open_broker(config: Any, dynamic: Any = None) -> Any:
    """Open the broker core over ``config.log_dirs`` (recovering it); its background
    thread runs flushes, retention, checkpoints and group timeouts off the event loop.
    ``dynamic`` (a :class:`~pylog.server.dynamic_config.DynamicBrokerConfigs`) gives the
    effective settings, dynamic broker configs included.  The partitions deferred at open
    load once the caller calls ``start_loading()`` (the server does when it listens)."""
    from pylog.broker.core import Broker

    if dynamic is not None:
        _values, sources = dynamic.topic_defaults()
        return Broker(dynamic.effective.log_dirs, broker_config_for(dynamic.effective, sources), background=True,
                      start_loader=False)
    return Broker(config.log_dirs, broker_config_for(config), background=True, start_loader=False)


def topic_uuid(topic_id: str | None) -> uuid.UUID:
    """A topic id in Kafka's base64 form as the UUID the wire carries."""
    if not topic_id:
        return zero_uuid()
    try:
        raw = base64.urlsafe_b64decode(topic_id + "=" * (-len(topic_id) % 4))
    except (ValueError, TypeError):
        return zero_uuid()
    if len(raw) != 16:
        return zero_uuid()
    import uuid

    return uuid.UUID(bytes=raw)
