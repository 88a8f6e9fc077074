"""``pylog serve --config`` with the ``server.properties`` files Kafka ships: Kafka's broker
configs that mean nothing to pylog are ignored with one WARN each, the client listener of
a KRaft listener list is served, the log settings apply; a misspelt or invalid key is one
line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pylog.errors import InvalidConfigError
from pylog.server.config import ServerConfig, read_properties_file
from pylog.server.kafka_config_names import KAFKA_BROKER_CONFIG_NAMES, is_kafka_broker_config
from tests.wire import WireClient
from server.util import unique

#: The settings of Kafka 3.x's config/kraft/server.properties (comments left out).
KRAFT_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
inter.broker.listener.name=PLAINTEXT
advertised.listeners=PLAINTEXT://localhost:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kraft-combined-logs
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
#log.flush.interval.messages=10000
#log.flush.interval.ms=1000
log.retention.hours=168
#log.retention.bytes=1073741824
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
"""

#: Kafka's ZooKeeper-era config/server.properties.
ZK_SERVER_PROPERTIES = """\
broker.id=0
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kafka-logs
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
log.retention.hours=168
log.retention.check.interval.ms=300000
zookeeper.connect=localhost:2181
zookeeper.connection.timeout.ms=18000
group.initial.rebalance.delay.ms=0
"""

_IGNORED_KRAFT = ["process.roles", "controller.quorum.voters", "num.network.threads", "num.io.threads"]
#: Understood since the cluster replicates the internal topics (unused on a single node).
_UNDERSTOOD_KRAFT = ["offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                     "transaction.state.log.min.isr"]


def test_kafkas_kraft_server_properties_starts_with_one_warning_per_ignored_key(serve, tmp_path):
    props = tmp_path / "server.properties"
    # The test picks the port and data dir (--listen / --data-dir win over the file).
    props.write_text(KRAFT_SERVER_PROPERTIES)
    server = serve(extra_args=["--config", str(props), "--override", "node.id=0",
                               "--override", "advertised.listeners="])
    for key in _IGNORED_KRAFT:
        line = server.wait_for_log(rf"WARNING pylog\.server\.config: server config {key}=\S* is a Kafka broker "
                                   "config with no meaning in pylog; ignored")
        assert sum(1 for x in server.lines if f"server config {key}=" in x) == 1, line
    # The listener list and its map are understood, not reported as ignored.
    assert not any("listener.security.protocol.map=" in x for x in server.lines)
    assert not any(f"server config {key}=" in x for x in server.lines for key in _UNDERSTOOD_KRAFT)
    with WireClient(server.bootstrap) as c:
        topic = unique("kraft-props")
        c.create_topic(topic, 1)
        cfg = {e.name: (e.value, e.config_source) for e in c.describe_configs(2, topic)}
        assert cfg["retention.ms"] == (str(168 * 3600 * 1000), 4)       # log.retention.hours, STATIC
        assert cfg["segment.bytes"] == ("1073741824", 4)
    assert server.stop() == 0


def test_listener_choice_of_a_kraft_listener_list():
    cfg = ServerConfig.from_kafka(read_properties_text(KRAFT_SERVER_PROPERTIES), warn=False)
    assert cfg.listen_address == ("0.0.0.0", 9092)
    assert cfg.advertised_address(("0.0.0.0", 9092)) == ("localhost", 9092)
    assert cfg.node_id == 1 and cfg.log_retention_ms == 168 * 3600 * 1000
    zk = ServerConfig.from_kafka(read_properties_text(ZK_SERVER_PROPERTIES), warn=False)
    assert zk.node_id == 0 and zk.group_initial_rebalance_delay_ms == 0
    # A listener whose name maps to PLAINTEXT is served under that protocol.
    named = ServerConfig.from_kafka({"listeners": "CLIENT://127.0.0.1:7777,CONTROLLER://:9093",
                                     "listener.security.protocol.map": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                                     "controller.listener.names": "CONTROLLER"}, warn=False)
    assert named.listen_address == ("127.0.0.1", 7777)
    for bad, why in (({"listeners": "SSL://:9093"}, "speaks SSL"),
                     ({"listeners": "CONTROLLER://:9093", "controller.listener.names": "CONTROLLER"},
                      "no client listener"),
                     ({"num.partition": "3"}, "did you mean 'num.partitions'"),
                     ({"log.retension.hours": "3"}, "did you mean 'log.retention.hours'"),
                     ({"log.roll.hours": "soon"}, "log.roll.hours"),
                     ({"log.cleanup.policy": "shred"}, "log.cleanup.policy")):
        with pytest.raises(InvalidConfigError, match=why):
            ServerConfig.from_kafka(bad, warn=False)


def test_topic_default_synonyms_and_unit_priorities():
    cfg = ServerConfig.from_kafka({"log.retention.hours": "2", "log.retention.minutes": "5",
                                   "log.roll.hours": "1", "compression.type": "zstd",
                                   "log.cleanup.policy": "compact,delete"}, warn=False)
    assert cfg.log_retention_ms == 5 * 60_000                   # minutes win over hours
    assert cfg.topic_defaults() == {"retention.ms": "300000", "segment.ms": "3600000",
                                    "compression.type": "zstd", "cleanup.policy": "compact,delete"}
    assert ServerConfig.from_kafka({"log.retention.ms": "7", "log.retention.hours": "1"},
                                   warn=False).log_retention_ms == 7


def test_known_names_table():
    for name in ("process.roles", "node.id", "zookeeper.connect", "ssl.keystore.location", "log.cleaner.threads",
                 "sasl.enabled.mechanisms", "num.replica.fetchers", "super.users", "group.coordinator.rebalance.protocols"):
        assert name in KAFKA_BROKER_CONFIG_NAMES, name
    assert is_kafka_broker_config("listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config")
    assert not is_kafka_broker_config("listener.name.x")
    assert not is_kafka_broker_config("num.partition")
    # pylog's own settings under Kafka's names are Kafka's too (no pylog-only spelling).
    assert set(ServerConfig.kafka_names()) <= KAFKA_BROKER_CONFIG_NAMES


@pytest.mark.parametrize("text, expected", [
    ("num.partitons=3\n", "unknown server config 'num.partitons' (did you mean 'num.partitions'?)"),
    ("log.retention.hours=a week\n", "log.retention.hours='a week' must be an integer"),
    ("listeners=SASL_SSL://:9094\n", "speaks SASL_SSL; pylog serves PLAINTEXT only"),
])
def test_misspelt_or_invalid_key_is_one_line_and_exit_2(tmp_path, text, expected):
    props = tmp_path / "server.properties"
    props.write_text(KRAFT_SERVER_PROPERTIES.replace("listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n", "")
                     + text)
    proc = subprocess.run([sys.executable, "-m", "pylog.cli", "serve", "--config", str(props),
                           "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("pylog serve:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def read_properties_text(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out
