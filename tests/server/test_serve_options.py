"""``pylog serve`` options: auto topic creation on and off, num.partitions, the advertised
listener, a server.properties file, bad settings, a clean shutdown on SIGINT, and the
event loop (asyncio or uvloop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pylog.protocol import messages as m
from pylog.records import RecordBatchBuilder
from tests.wire import BrokerConnection, WireClient
from server.util import unique


def _batch():
    b = RecordBatchBuilder()
    b.append(None, None, b"v")
    return b.build()


def test_auto_create_on_metadata_and_produce_with_num_partitions(serve):
    server = serve(extra_args=["--num-partitions", "3"])
    with WireClient(server.bootstrap) as c:
        md = c.metadata([unique("auto-md")], allow_auto_create=True)
        assert md.topics[0].error_code == 0 and len(md.topics[0].partitions) == 3
        topic = unique("auto-produce")
        T = m.ProduceRequest
        resp = c.bootstrap.request(0, T(acks=1, timeout_ms=5000, topic_data=[T.TopicProduceData(
            name=topic, partition_data=[T.PartitionProduceData(index=2, records=_batch())])]))
        assert resp.responses[0].partition_responses[0].error_code == 0
        assert len(c.partitions(topic)) == 3
        # A client asking not to create (Metadata v4+ allow_auto_topic_creation=false).
        md = c.metadata([unique("no-md")], allow_auto_create=False)
        assert md.topics[0].error_code == 3
    server.wait_for_log(r"auto-created topic auto-produce\S* \(3 partitions\) on produce")


def test_auto_create_disabled(serve):
    server = serve(extra_args=["--no-auto-create-topics"])
    topic = unique("nothere")
    with WireClient(server.bootstrap) as c:
        md = c.metadata([topic], allow_auto_create=True)
        assert md.topics[0].error_code == 3           # UNKNOWN_TOPIC_OR_PARTITION
        T = m.ProduceRequest
        resp = c.bootstrap.request(0, T(acks=1, timeout_ms=5000, topic_data=[T.TopicProduceData(
            name=topic, partition_data=[T.PartitionProduceData(index=0, records=_batch())])]))
        assert resp.responses[0].partition_responses[0].error_code == 3
        assert topic not in {t.name for t in c.metadata(None).topics}
        # Invalid names are INVALID_TOPIC_EXCEPTION whatever the setting.
        assert c.metadata(["bad name!"], allow_auto_create=True).topics[0].error_code == 17


def test_advertised_listener_and_config_file(serve, tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("# a Kafka-style file\nnum.partitions = 2\n"
                     "advertised.listeners=PLAINTEXT://localhost:19999\nlog.retention.hours=1\n")
    server = serve(extra_args=["--config", str(props)])
    with BrokerConnection(server.host, server.port) as conn:
        md = conn.request(3, m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(
            name=unique("adv"))], allow_auto_topic_creation=True))
        assert (md.brokers[0].host, md.brokers[0].port) == ("localhost", 19999)
        assert len(md.topics[0].partitions) == 2
        cfg = conn.request(32, m.DescribeConfigsRequest(resources=[m.DescribeConfigsRequest.DescribeConfigsResource(
            resource_type=4, resource_name="0", configuration_keys=None)]))
        entries = {e.name: e for e in cfg.results[0].configs}
        # As Kafka describes it: the hours spelling is the static one; log.retention.ms
        # itself stays null (DEFAULT_CONFIG).
        assert (entries["log.retention.hours"].value, entries["log.retention.hours"].config_source) == ("1", 4)
        assert (entries["log.retention.ms"].value, entries["log.retention.ms"].config_source) == (None, 5)
        assert entries["num.partitions"].config_source == 4
        assert entries["socket.request.max.bytes"].config_source == 5   # DEFAULT_CONFIG


def test_bad_settings_are_refused(tmp_path):
    for args in (["--override", "no.such.setting=1"], ["--listen", "127.0.0.1:99999"],
                 ["--override", "num.partitions=zero"], ["--node-id", "1", "--zookeeper", "/no-host"],
                 ["--node-id", "1", "--zookeeper", "127.0.0.1:x/pylog"]):
        proc = subprocess.run([sys.executable, "-m", "pylog.cli", "serve", "--data-dir", str(tmp_path / "d"), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "pylog serve:" in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
        assert not (tmp_path / "d").exists(), "refused before the data directory is touched"


def test_sigint_shuts_down_cleanly(serve):
    server = serve()
    topic = unique("clean")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 1)
        c.produce(topic, 0, _batch())
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(30) == 0
    server.wait_for_log(r"received SIGINT")
    server.wait_for_log(r"broker closed cleanly")
    assert os.path.exists(os.path.join(server.data_dir, ".kafka_cleanshutdown"))
    server.stop()


def test_second_server_on_the_same_data_dir_is_refused(serve):
    server = serve()
    proc = subprocess.run([sys.executable, "-m", "pylog.cli", "serve", "--data-dir", server.data_dir,
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "is in use by another process" in proc.stderr
    with WireClient(server.bootstrap) as c:      # the first one is unharmed
        assert c.metadata(None).brokers[0].port == server.port


def test_every_broker_setting_reaches_the_core():
    """Each ``pylog serve`` setting that the broker core has a field for is passed on,
    not only accepted and described (log.cleaner.enable=false used to be ignored)."""
    from pylog.server._core_adapter import broker_config_for
    from pylog.server.config import ServerConfig

    off = broker_config_for(ServerConfig(log_cleaner_enable=False, num_partitions=3, node_id=7,
                                         log_retention_check_interval_ms=1234,
                                         log_flush_scheduler_interval_ms=567))
    assert off.log_cleaner_enable is False
    assert (off.num_partitions, off.node_id) == (3, 7)
    assert (off.log_retention_check_interval_ms, off.log_flush_scheduler_interval_ms) == (1234, 567)
    assert broker_config_for(ServerConfig()).log_cleaner_enable is True


#: BrokerConfig fields with no Kafka broker config of their own (pylog's internals), or
#: that the adapter builds from several settings.
_NOT_SERVE_SETTINGS = {"group", "txn", "topic_defaults", "topic_default_sources", "max_open_segments",
                       "producer_id_block_size"}


def test_every_core_setting_is_a_serve_setting_and_reaches_the_core():
    """A broker-core setting that Kafka names must be settable in server.properties and
    reach the core (offsets.topic.segment.bytes was accepted as 'no meaning in pylog')."""
    import dataclasses

    from pylog.broker.core import BrokerConfig
    from pylog.server._core_adapter import broker_config_for
    from pylog.server.config import ServerConfig

    core = {f.name: f for f in dataclasses.fields(BrokerConfig)}
    serve = {f.name for f in dataclasses.fields(ServerConfig)}
    assert set(core) - serve - _NOT_SERVE_SETTINGS == set()
    changed = {}
    for name in sorted(set(core) & serve):
        default = getattr(BrokerConfig(), name)
        if isinstance(default, bool):
            changed[name] = not default
        elif name not in ("default_replication_factor",):   # one node: only 1
            changed[name] = default + 7
    got = broker_config_for(ServerConfig(**changed))
    reached = {name: getattr(got, name) for name in changed}
    # The server creates topics itself (Metadata, Produce), never the core.
    assert reached.pop("auto_create_topics_enable") is False
    changed.pop("auto_create_topics_enable")
    assert reached == changed
    # The transaction coordinator's settings (BrokerConfig.txn) are serve settings too.
    from pylog.broker.txn_coordinator import TransactionCoordinatorConfig

    txn = {f.name: getattr(TransactionCoordinatorConfig(), f.name) + 7
           for f in dataclasses.fields(TransactionCoordinatorConfig)}
    assert set(txn) <= serve
    got = broker_config_for(ServerConfig(**txn)).txn
    assert {name: getattr(got, name) for name in txn} == txn



def test_cleaner_disabled_runs_no_cleaner(tmp_path):
    from pylog.server.config import ServerConfig
    from pylog.server.server import ServerThread

    for enabled in (False, True):
        st = ServerThread(ServerConfig(log_dirs=str(tmp_path / f"data-{enabled}"), listeners="127.0.0.1:0",
                                       log_cleaner_enable=enabled))
        st.start()
        try:
            assert (st.server.broker.cleaner is not None) is enabled
        finally:
            st.stop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_serves_a_real_client_on_either_event_loop(serve, monkeypatch, loop):
    """PYLOG_EVENT_LOOP picks the loop (uvloop's by default when installed); librdkafka
    produces and consumes through each, Fetch's sendfile path included."""
    import uvloop  # noqa: F401  (a test dependency: its absence is a failure, not a skip)
    from confluent_kafka import Consumer, Producer

    monkeypatch.setenv("PYLOG_EVENT_LOOP", loop)
    server = serve()
    server.wait_for_log(rf"listening on .* loop={loop}$")
    topic = unique(f"loop-{loop}")
    p = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 5})
    values = [b"%s-%d" % (loop.encode(), i) for i in range(2000)]
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": unique("g"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < len(values) and time.monotonic() < deadline:
            for msg in c.consume(500, 1.0):
                assert msg.error() is None, msg.error()
                got.append(msg.value())
    finally:
        c.close()
    assert got == values


def test_default_loop_is_uvloop_when_installed_and_bad_choices_are_refused(serve, monkeypatch, tmp_path):
    import uvloop  # noqa: F401
    monkeypatch.delenv("PYLOG_EVENT_LOOP", raising=False)
    serve().wait_for_log(r"listening on .* loop=uvloop$")
    env = {**os.environ, "PYLOG_EVENT_LOOP": "tokio"}
    proc = subprocess.run([sys.executable, "-m", "pylog.cli", "serve", "--data-dir", str(tmp_path / "d"),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "cannot start: PYLOG_EVENT_LOOP='tokio': expected auto, asyncio or uvloop" in proc.stderr


@pytest.mark.parametrize("argv", [
    ["serve", "--data-dir", "d", "--listen", "127.0.0.1:0", "--log-level", "INFO", "--override", "a=b",
     "--override", "c=d", "--num-partitions", "3", "--no-auto-create-topics", "--node-id", "2"],
    ["serve"],
])
def test_serve_alone_parses_as_the_whole_cli(argv):
    # `pylog serve ...` builds serve's parser alone (start-up time, #17): same namespace.
    from pylog.cli import build_parser

    assert vars(build_parser("serve").parse_args(argv)) == vars(build_parser().parse_args(argv))
