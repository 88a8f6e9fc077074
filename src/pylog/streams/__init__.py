"""pylog.streams: Kafka Streams for Python.

The DSL (:class:`StreamsBuilder`, :class:`KStream`, :class:`KTable`,
:class:`GlobalKTable`, windows, joins), the Processor API (:class:`Topology`,
:class:`Processor`), the :class:`TopologyTestDriver` and the runtime
(:class:`StreamsApp`), with Kafka Streams' semantics and names in snake_case::

    from pylog.streams import StreamsBuilder, Serdes, TopologyTestDriver
    b = StreamsBuilder()
    b.stream("in", key_serde=Serdes.string(), value_serde=Serdes.string()) \\
     .filter(lambda k, v: v != "") \\
     .map_values(str.upper) \\
     .to("out")
    with TopologyTestDriver(b.build()) as driver:
        ...
    b.build(application_id="app").run(pylog.open("./data"))   # or pylog.connect(...)

Streams uses only pylog's client API: it never imports the broker or the server.
"""

from .builder import StreamsBuilder
from .errors import (DefaultProductionExceptionHandler, ErrorHandlerContext, LogAndContinueExceptionHandler,
                     LogAndFailExceptionHandler, Response, StreamThreadExceptionResponse)
from .fk_join import TableJoined
from .kgrouped import CogroupedKStream, KGroupedStream
from .kstream import BranchedKStream, KStream
from .ktable import GlobalKTable, KTable
from .options import (Branched, Consumed, Grouped, Joined, Materialized, Named, Printed, Produced, Repartitioned,
                      StreamJoined)
from .runtime import StreamsApp
from .iq import (HostInfo, InvalidStateStoreError, KeyQueryMetadata, QueryableStoreTypes, StoreQueryParameters,
                 StreamsMetadata, TaskMetadata, ThreadMetadata)
from .processor import Cancellable, Change, FixedKeyProcessor, Processor, PunctuationType, Record, RecordMetadata
from .serdes import Serde, Serdes, SerializationError
from .task import StreamsError
from .test_driver import TestInputTopic, TestOutputTopic, TestRecord, TopologyTestDriver
from .topology import TopicNameExtractor, Topology, TopologyDescription, TopologyError
from .windows import (BufferConfig, EmitStrategy, JoinWindows, SessionWindows, SlidingWindows, Suppressed,
                      TimeWindows, Window, Windowed, WindowedSerdes)

__all__ = [
    "StreamsBuilder", "KStream", "KTable", "GlobalKTable", "KGroupedStream", "CogroupedKStream", "BranchedKStream",
    "Serde", "Serdes", "SerializationError",
    "Consumed", "Produced", "Grouped", "Materialized", "Named", "Joined", "StreamJoined", "Repartitioned",
    "TableJoined",
    "Printed", "Branched",
    "Topology", "TopologyDescription", "TopologyError", "TopicNameExtractor",
    "Processor", "FixedKeyProcessor", "Record", "Change", "RecordMetadata", "PunctuationType", "Cancellable",
    "StreamsError", "StreamsApp",
    "StoreQueryParameters", "QueryableStoreTypes", "InvalidStateStoreError", "HostInfo", "KeyQueryMetadata",
    "StreamsMetadata", "ThreadMetadata", "TaskMetadata",
    "Response", "ErrorHandlerContext", "LogAndContinueExceptionHandler", "LogAndFailExceptionHandler",
    "DefaultProductionExceptionHandler", "StreamThreadExceptionResponse",
    "TopologyTestDriver", "TestInputTopic", "TestOutputTopic", "TestRecord",
    "TimeWindows", "SlidingWindows", "SessionWindows", "JoinWindows", "Window", "Windowed", "WindowedSerdes",
    "Suppressed", "BufferConfig", "EmitStrategy",
]
