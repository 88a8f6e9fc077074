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
(``client.broker`` for low-level use); the same client API runs over the Kafka protocol.
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

from pylog.broker.core import Broker, OffsetAndMetadata, TopicPartition
from pylog.client.aio import AIOConsumer, AIOProducer
from pylog.client.client import Client
from pylog.client.consumer import Consumer, ConsumerRecord
from pylog.client.embedded import EmbeddedTransport as _EmbeddedTransport
from pylog.client.producer import Producer, RecordMetadata
from pylog.errors import PylogError

__version__ = "0.1.0"
__all__ = ["open", "Client", "Broker", "Producer", "Consumer", "AIOProducer", "AIOConsumer", "RecordMetadata",
           "ConsumerRecord", "TopicPartition", "OffsetAndMetadata", "PylogError", "__version__"]


def open(data_dir: str | _os.PathLike[str], **settings: _Any) -> Client:  # noqa: A001 - pylog.open, as the embedded API reads
    """Open (creating if needed) an embedded broker over ``data_dir`` and return a
    :class:`Client` on it.

    ``settings`` are :class:`~pylog.broker.core.BrokerConfig` fields (``num_partitions``,
    ``auto_create_topics_enable``, ``topic_defaults``, ...) plus ``clock`` and
    ``background``.  Use it as a context manager, or call ``close()``: that closes the
    client's producers and consumers, then the broker (which flushes every log and marks a
    clean shutdown).  ``client.broker`` is the broker, for low-level use.
    """
    broker = Broker(data_dir, **settings)
    return Client(_EmbeddedTransport(broker, owns_broker=True))
