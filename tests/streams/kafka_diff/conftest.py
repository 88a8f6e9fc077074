"""The Java side of the Kafka Streams comparison comes from the kafka_ref tests' Maven
build: their ``kafka_jars`` fixture (session-scoped, built once per run) is shared here."""

from tests.kafka_ref.conftest import kafka_jars  # noqa: F401  (a fixture, used by name)
