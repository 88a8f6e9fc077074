"""pylog.streams: Kafka Streams for Python (DSL, Processor API, state stores, TopologyTestDriver)."""
