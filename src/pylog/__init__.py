"""pylog: Apache Kafka's architecture as a Python package with Cython hot paths.

Embedded use::

    import pylog

    with pylog.open("data") as client:
        client.create_topic("orders", partitions=3)
        producer = client.producer(acks="all", linger_ms=5)
        producer.send("orders", value=b"...", key=b"customer-123").result()
        consumer = client.consumer("orders", group_id="billing", auto_offset_reset="earliest")
        for record in consumer.poll(timeout_ms=1000):
            ...

``pylog.open`` returns a :class:`Client` over an in-process :class:`Broker`
(``client.broker`` for low-level use); ``pylog.connect("host:9092")`` returns the same
:class:`Client` over the Kafka protocol, to ``pylog serve`` or any Kafka cluster.
"""

try:
    from pylog import _core  # noqa: F401
except ImportError as exc:  # no silent pure-Python fallback
    raise ImportError(
        "pylog's compiled extension pylog._core failed to import "
        f"({exc}). pylog needs it: build it with `pip install -e .` (a C compiler and "
        "Python headers are needed), or install a wheel for this platform."
    ) from exc

import os as _os
from typing import Any as _Any

from typing import TYPE_CHECKING as _TYPE_CHECKING

from pylog.errors import PylogError

if _TYPE_CHECKING:
    from pylog.broker.core import Broker, OffsetAndMetadata, TopicPartition
    from pylog.client.aio import AIOConsumer, AIOProducer
    from pylog.client.client import Client
    from pylog.client.consumer import Consumer, ConsumerBatch, ConsumerRecord
    from pylog.client.producer import Producer, RecordMetadata

# The public classes are imported on first use (PEP 562), not by ``import pylog``: every
# module of the package imports this one first, and ``pylog serve`` needs neither the
# client nor (until it opens a log) the whole broker, so its start-up does not pay for them.
_LAZY = {
    "Broker": "pylog.broker.core", "OffsetAndMetadata": "pylog.broker.core",
    "TopicPartition": "pylog.broker.core", "AIOConsumer": "pylog.client.aio",
    "AIOProducer": "pylog.client.aio", "Client": "pylog.client.client",
    "Consumer": "pylog.client.consumer", "ConsumerBatch": "pylog.client.consumer",
    "ConsumerRecord": "pylog.client.consumer", "Producer": "pylog.client.producer",
    "RecordMetadata": "pylog.client.producer",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pylog' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"
__all__ = ["open", "connect", "Client", "Broker", "Producer", "Consumer", "AIOProducer", "AIOConsumer", "RecordMetadata",
           "ConsumerRecord", "ConsumerBatch", "TopicPartition", "OffsetAndMetadata", "PylogError", "__version__"]


def open(data_dir: str | _os.PathLike[str], **settings: _Any) -> "Client":  # noqa: A001 - pylog.open, as the embedded API reads
    """Open (creating if needed) an embedded broker over ``data_dir`` and return a
    :class:`Client` on it.

    ``settings`` are :class:`~pylog.broker.core.BrokerConfig` fields (``num_partitions``,
    ``auto_create_topics_enable``, ``topic_defaults``, ...) plus ``clock`` and
    ``background``.  Use it as a context manager, or call ``close()``: that closes the
    client's producers and consumers, then the broker (which flushes every log and marks a
    clean shutdown).  ``client.broker`` is the broker, for low-level use.
    """
    from pylog.broker.core import Broker
    from pylog.client.client import Client
    from pylog.client.embedded import EmbeddedTransport

    broker = Broker(data_dir, **settings)
    return Client(EmbeddedTransport(broker, owns_broker=True))


def connect(bootstrap_servers: str | list[str], **config: _Any) -> "Client":
    """Connect to a Kafka-protocol cluster (``pylog serve``, a pylog cluster, Apache
    Kafka) and return a :class:`Client` on it: the same producers, consumers and admin
    calls as :func:`open`.

    Parameters
    ----------
    bootstrap_servers : str or list of str
        ``host:port[,host:port...]``: some of the cluster's brokers; the rest are learnt
        from the metadata.
    **config
        Network settings: ``client_id``, ``request_timeout_ms`` (30000),
        ``metadata_max_age_ms`` (300000), ``retry_backoff_ms`` (100),
        ``reconnect_backoff_ms`` (50), ``reconnect_backoff_max_ms`` (1000),
        ``socket_connection_setup_timeout_ms`` (10000), ``connections_max_idle_ms``
        (540000), ``max_in_flight`` (5), ``max_response_size``; and
        ``allow_auto_create_topics`` (True: a producer's first send to a topic asks the
        cluster to create it, as Kafka's producer does).  Producer and consumer settings
        go to ``client.producer(...)`` and ``client.consumer(...)``.

    Raises
    ------
    InvalidConfigError
        A malformed bootstrap list, or an unknown or bad setting.

    The connection is made in the background: an unreachable cluster shows as retriable
    errors (RequestTimedOutError, NetworkError) on the first calls that need it.
    """
    import inspect

    from pylog.client.client import Client
    from pylog.client.kafka.network import NetworkClient
    from pylog.client.kafka.transport import KafkaTransport
    from pylog.errors import InvalidConfigError

    network_keys = [k for k in inspect.signature(NetworkClient.__init__).parameters
                    if k not in ("self", "bootstrap_servers")]
    transport_keys = ["allow_auto_create_topics"]
    unknown = sorted(set(config) - set(network_keys) - set(transport_keys))
    if unknown:
        raise InvalidConfigError(
            f"unknown pylog.connect setting(s) {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(sorted(network_keys + transport_keys))} (producer and consumer settings go to "
            "client.producer(...) / client.consumer(...))")
    return Client(KafkaTransport(bootstrap_servers, **config))
