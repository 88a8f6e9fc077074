"""The settings of a streams app (Kafka's ``StreamsConfig``) that the runtime reads:
each by Kafka's dotted name or its snake_case twin (``commit.interval.ms`` or
``commit_interval_ms``), and the processing guarantee.

Thread safety: plain functions over a dict the caller does not change while they run.
"""

from __future__ import annotations

import time
from typing import Any, Dict

__all__ = ["AT_LEAST_ONCE", "EXACTLY_ONCE_V2", "setting", "processing_guarantee", "now_ms"]

AT_LEAST_ONCE = "at_least_once"
EXACTLY_ONCE_V2 = "exactly_once_v2"


def now_ms() -> int:
    """Wall-clock time in milliseconds (the runtime's clock for commits and punctuation)."""
    return int(time.time() * 1000)


def setting(config: Dict[str, Any], name: str, default: Any) -> Any:
    """A setting by Kafka's dotted name or its snake_case twin (``commit.interval.ms`` or
    ``commit_interval_ms``)."""
    if name in config:
        return config[name]
    return config.get(name.replace(".", "_"), default)


def processing_guarantee(config: Dict[str, Any]) -> str:
    """``processing.guarantee``: :data:`AT_LEAST_ONCE` (the default) or
    :data:`EXACTLY_ONCE_V2` (``exactly_once_beta``, its name before Kafka 3.0, too).

    Raises
    ------
    ValueError
        Any other value (exactly-once v1, one producer per task, is gone in Kafka 4.0).
    """
    value = str(setting(config, "processing.guarantee", AT_LEAST_ONCE)).lower()
    if value == "exactly_once_beta":       # Kafka's name of exactly_once_v2 before 3.0
        value = EXACTLY_ONCE_V2
    if value not in (AT_LEAST_ONCE, EXACTLY_ONCE_V2):
        raise ValueError(f"processing.guarantee is {AT_LEAST_ONCE!r} or {EXACTLY_ONCE_V2!r}, got {value!r} "
                         "(exactly-once v1, one producer per task, is not supported, as in Kafka 4.0)")
    return value
