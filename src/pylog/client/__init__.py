"""The client API: producers, consumers and admin over a transport.

- :mod:`~pylog.client.client`     :class:`Client`, the handle ``pylog.open`` (and ``pylog.connect``) return
- :mod:`~pylog.client.transport`  :class:`Transport`, what the client needs from a cluster
- :mod:`~pylog.client.embedded`   :class:`EmbeddedTransport` over an in-process broker core
- :mod:`~pylog.client.producer`   :class:`Producer` (batching, idempotence, retries)
- :mod:`~pylog.client.consumer`   :class:`Consumer` (assign/subscribe, groups, offsets, poison pills,
                                  zero-copy :class:`ConsumerBatch` views)
- :mod:`~pylog.client.aio`        asyncio flavours of both
"""

from pylog.client.aio import AIOConsumer, AIOProducer
from pylog.client.client import Client
from pylog.client.consumer import (Consumer, ConsumerBatch, ConsumerColumns, ConsumerRebalanceListener, ConsumerRecord,
                                   OffsetAndTimestamp)
from pylog.client.embedded import EmbeddedTransport
from pylog.client.producer import BatchSendFuture, FutureRecordMetadata, Producer, RecordMetadata
from pylog.client.transport import Transport

__all__ = ["Client", "Transport", "EmbeddedTransport", "Producer", "Consumer", "AIOProducer", "AIOConsumer",
           "RecordMetadata", "FutureRecordMetadata", "BatchSendFuture", "ConsumerRecord", "ConsumerBatch",
           "ConsumerColumns", "ConsumerRebalanceListener", "OffsetAndTimestamp"]
