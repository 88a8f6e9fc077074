"""The embedded client: a producer and a consumer over an in-process broker core.

- :mod:`~pylog.client.producer`  :class:`Producer` (batching, idempotence, retries)
- :mod:`~pylog.client.consumer`  :class:`Consumer` (assign/subscribe, groups, offsets, poison pills)
- :mod:`~pylog.client.aio`       asyncio flavours of both
"""

from pylog.client.consumer import Consumer, ConsumerRebalanceListener, ConsumerRecord, OffsetAndTimestamp
from pylog.client.producer import BatchSendFuture, FutureRecordMetadata, Producer, RecordMetadata

__all__ = ["Producer", "Consumer", "RecordMetadata", "FutureRecordMetadata", "BatchSendFuture",
           "ConsumerRecord", "ConsumerRebalanceListener", "OffsetAndTimestamp"]
