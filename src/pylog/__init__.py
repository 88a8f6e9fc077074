"""pylog: Apache Kafka's architecture as a Python package with Cython hot paths.

Embedded use::

    import pylog

    with pylog.open("data") as broker:
        broker.create_topic("orders", partitions=3)
        producer = broker.producer(acks="all", linger_ms=5)
        producer.send("orders", value=b"...", key=b"customer-123").result()
        consumer = broker.consumer("orders", group_id="billing", auto_offset_reset="earliest")
        for record in consumer.poll(timeout_ms=1000):
            ...
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
from pylog.client.consumer import Consumer, ConsumerRecord
from pylog.client.producer import Producer, RecordMetadata
from pylog.errors import PylogError

__version__ = "0.1.0"
__all__ = ["open", "Broker", "Producer", "Consumer", "RecordMetadata", "ConsumerRecord", "TopicPartition",
           "OffsetAndMetadata", "PylogError", "__version__"]


def open(data_dir: str | _os.PathLike[str], **settings: _Any) -> Broker:  # noqa: A001 - pylog.open, as the embedded API reads
    """Open (creating if needed) an embedded broker over ``data_dir``.

    ``settings`` are :class:`~pylog.broker.core.BrokerConfig` fields (``num_partitions``,
    ``auto_create_topics_enable``, ``topic_defaults``, ...) plus ``clock`` and
    ``background``.  Use it as a context manager, or call ``close()``: that flushes every
    log and marks a clean shutdown.
    """
    return Broker(data_dir, **settings)
