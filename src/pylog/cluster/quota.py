"""Replication throttling: Kafka's ReplicationQuotaManager, one per side of a broker.

A reassignment copies whole partitions to new replicas; left alone, that traffic takes
the bandwidth producers and in-sync followers need.  Kafka bounds it with two quotas a
broker holds, in bytes per second, set as dynamic broker configs:

- ``leader.replication.throttled.rate``: what this broker, as leader, sends to followers
  of throttled partitions;
- ``follower.replication.throttled.rate``: what this broker, as follower, fetches for
  throttled partitions;

and two topic configs saying which replicas are throttled,
``leader.replication.throttled.replicas`` and ``follower.replication.throttled.replicas``:
``"partition:broker,..."`` (a broker applies the entries that name it) or ``"*"`` (every
replica of the topic).  ``kafka-reassign-partitions --throttle`` writes them
(:meth:`pylog.cluster.controller.ZkAdmin.set_reassignment_throttle`).

The rules are Kafka's: only a replica that is *not* in the ISR is ever throttled (a
catching-up replica; in-sync followers and producers are never slowed), and only while
the side's measured rate is above its quota.  A throttled leader answers that
partition's Fetch with no records (the follower's position still counts); a throttled
follower leaves the partition out of its next Fetch.  What throttled partitions move is
recorded whatever the rate.

The rate is Kafka's windowed ``Rate``: the bytes of the last ``windows`` samples of
``window_ms`` each (``replication.quota.window.num`` 11, ``replication.quota.window.size.seconds``
1), divided by the time they span, counted as at least ``windows - 1`` full windows, so a
burst after an idle spell is measured over ten seconds, not one.

The rates are set per broker (``/config/brokers/<id>``) or as the cluster default
(``/config/brokers/<default>``); a broker's own value wins over the default
(:func:`effective_rate`), and DescribeConfigs shows both layers
(:func:`describe_rates`, Kafka 3.x's answer in ZooKeeper mode).

No I/O and no clock of its own: callers pass ``now_ms``, so a test drives it with a fake
clock.  Nothing is durable (the configs are in ZooKeeper).  Thread-safe: one lock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Iterable, Mapping

from pylog.errors import InvalidConfigError

_log = logging.getLogger("pylog.cluster.quota")

__all__ = ["ReplicationQuota", "throttled_partitions", "effective_rate", "describe_rates", "RATE_CONFIGS",
           "DEFAULT_ENTITY", "ALL_REPLICAS",
           "REPLICATION_QUOTA_WINDOW_NUM", "REPLICATION_QUOTA_WINDOW_SIZE_MS"]

#: The two dynamic broker configs of the replication quotas.
RATE_CONFIGS = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
#: The ZooKeeper entity name of the cluster-default dynamic broker configs.
DEFAULT_ENTITY = "<default>"


def effective_rate(name: str, per_broker: Mapping[str, str], default: Mapping[str, str]) -> str | None:
    """The value of rate config ``name`` in force on a broker: its own dynamic value,
    else the cluster default, else None (unlimited)."""
    value = per_broker.get(name)
    return value if value is not None else default.get(name)


def describe_rates(per_broker: Mapping[str, str] | None, default: Mapping[str, str],
                   names: Iterable[str] | None = None) -> list:
    """DescribeConfigs entries (:class:`pylog.broker.topic_config.ConfigEntry`) of the
    rates, as Kafka 3.x in ZooKeeper mode lists them: for a broker (``per_broker`` its
    dynamic configs) each rate set at either layer, from the highest layer that holds it
    (DYNAMIC_BROKER_CONFIG, then DYNAMIC_DEFAULT_BROKER_CONFIG), with those layers as its
    synonyms; for the cluster default (``per_broker`` None) the rates the default layer
    holds.  A rate set nowhere is not listed (Kafka has no static default for them), and
    Kafka marks them read-only (they are not among its reconfigurable broker configs,
    though AlterConfigs sets them).  ``names`` None lists both."""
    from pylog.broker.topic_config import ConfigEntry, ConfigSource, ConfigType
    layers = [(default, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)]
    if per_broker is not None:
        layers.insert(0, (per_broker, ConfigSource.DYNAMIC_BROKER_CONFIG))
    wanted = None if names is None else set(names)
    out = []
    for name in RATE_CONFIGS:
        if wanted is not None and name not in wanted:
            continue
        synonyms = tuple((name, layer[name], source) for layer, source in layers if layer.get(name) is not None)
        if synonyms:
            out.append(ConfigEntry(name=name, value=synonyms[0][1], source=synonyms[0][2], is_default=False,
                                   read_only=True, type=ConfigType.LONG, synonyms=synonyms))
    return out


#: Kafka's replication.quota.window.num and replication.quota.window.size.seconds defaults.
REPLICATION_QUOTA_WINDOW_NUM = 11
REPLICATION_QUOTA_WINDOW_SIZE_MS = 1000
#: ``*.replication.throttled.replicas`` naming every replica of the topic.
ALL_REPLICAS = "*"


def throttled_partitions(value: str | None, broker_id: int) -> frozenset[int] | None:
    """The partitions a ``*.replication.throttled.replicas`` value throttles on broker
    ``broker_id``: None for ``"*"`` (all of them), else those listed with this broker.

    Raises
    ------
    InvalidConfigError
        Not ``"*"`` nor a comma-separated list of ``partition:broker``.
    """
    value = (value or "").strip()
    if value == ALL_REPLICAS:
        return None
    out = set()
    for entry in filter(None, (e.strip() for e in value.split(","))):
        partition, sep, broker = entry.partition(":")
        if not sep or not partition.strip().isdigit() or not broker.strip().isdigit():
            raise InvalidConfigError(f"throttled replica {entry!r} is not partition:broker")
        if int(broker) == broker_id:
            out.add(int(partition))
    return frozenset(out)


class ReplicationQuota:
    """One side's quota (module docstring).

    Parameters
    ----------
    side : str
        ``"leader"`` or ``"follower"``, for the log: an INFO line when throttling starts
        and when it stops.
    windows, window_ms : int
        Kafka's ``replication.quota.window.num`` and ``.window.size.seconds`` (in ms).
    """

    def __init__(self, side: str = "leader", windows: int = REPLICATION_QUOTA_WINDOW_NUM,
                 window_ms: int = REPLICATION_QUOTA_WINDOW_SIZE_MS) -> None:
        if windows < 2 or window_ms < 1:
            raise InvalidConfigError("a replication quota needs at least 2 windows of at least 1 ms")
        self.side = side
        self._throttling = False
        self.windows = windows
        self.window_ms = window_ms
        self._lock = threading.Lock()
        #: Bytes per second; None: unlimited (Kafka's Long.MaxValue default).
        self._rate: int | None = None
        #: topic -> throttled partitions (None: all of them).
        self._throttled: dict[str, frozenset[int] | None] = {}
        #: [window start ms, bytes] of the retained samples, oldest first.
        self._samples: deque[list[int]] = deque()

    # -- configuration ---------------------------------------------------------------

    @property
    def rate(self) -> int | None:
        return self._rate

    def set_rate(self, bytes_per_second: int | None) -> None:
        """The quota in bytes/s (None or a negative value: unlimited)."""
        with self._lock:
            self._rate = None if bytes_per_second is None or bytes_per_second < 0 else int(bytes_per_second)

    def set_rate_config(self, value: str | None) -> None:
        """:meth:`set_rate` from a ``*.replication.throttled.rate`` config value.

        Raises
        ------
        InvalidConfigError
            Not an integer.
        """
        if value is None or not str(value).strip():
            self.set_rate(None)
            return
        try:
            self.set_rate(int(str(value).strip()))
        except ValueError:
            raise InvalidConfigError(f"a replication throttled rate is bytes per second, got {value!r}") from None

    def set_throttled(self, topic: str, partitions: Iterable[int] | None) -> None:
        """Throttle ``partitions`` of ``topic`` (None: all of them; empty: none)."""
        with self._lock:
            if partitions is None:
                self._throttled[topic] = None
            else:
                parts = frozenset(partitions)
                if parts:
                    self._throttled[topic] = parts
                else:
                    self._throttled.pop(topic, None)

    def is_throttled(self, topic: str, partition: int) -> bool:
        parts = self._throttled.get(topic, frozenset())
        return parts is None or partition in parts

    # -- measuring ---------------------------------------------------------------------

    def _roll(self, now_ms: int) -> None:
        samples = self._samples
        start = now_ms - now_ms % self.window_ms
        if not samples or samples[-1][0] < start:
            samples.append([start, 0])
        horizon = start - (self.windows - 1) * self.window_ms
        while samples and samples[0][0] < horizon:
            samples.popleft()

    def record(self, nbytes: int, now_ms: int) -> None:
        """``nbytes`` of a throttled partition's replication moved at ``now_ms``."""
        if nbytes <= 0:
            return
        with self._lock:
            self._roll(now_ms)
            self._samples[-1][1] += nbytes

    def measure(self, now_ms: int) -> float:
        """The measured rate, bytes/s (Kafka's windowed Rate, module docstring)."""
        with self._lock:
            self._roll(now_ms)
            total = sum(b for _, b in self._samples)
            elapsed = now_ms - self._samples[0][0]
        elapsed = max(elapsed, (self.windows - 1) * self.window_ms)
        return total * 1000.0 / elapsed

    def is_exceeded(self, now_ms: int) -> bool:
        rate = self._rate
        return rate is not None and self.measure(now_ms) > rate

    def should_throttle(self, topic: str, partition: int, in_sync: bool, now_ms: int) -> bool:
        """Kafka's shouldLeaderThrottle / shouldFollowerThrottle: a replica out of the ISR
        of a throttled partition while the quota is exceeded."""
        if in_sync or not self.is_throttled(topic, partition):
            return False
        exceeded = self.is_exceeded(now_ms)
        if exceeded != self._throttling:
            self._throttling = exceeded
            _log.info("%s replication throttle %s (%s-%d out of the ISR; quota %s bytes/s, measured %.0f)",
                      self.side, "on" if exceeded else "off", topic, partition, self._rate, self.measure(now_ms))
        return exceeded

    def apply_topic_config(self, topic: str, config: Mapping[str, str] | None, key: str, broker_id: int) -> None:
        """Throttle what ``config[key]`` (a ``*.replication.throttled.replicas`` value of
        ``topic``, None when the topic has no config) names for ``broker_id``.

        Raises
        ------
        InvalidConfigError
            A malformed value (the throttle of the topic is then left as it was).
        """
        self.set_throttled(topic, throttled_partitions((config or {}).get(key), broker_id))
