"""Dynamic broker configs against ``pylog serve``: librdkafka's and kafka-python's admin
clients change them at run time (cluster default and per broker), DescribeConfigs shows
each value's source and synonyms, the change takes effect on existing topics (a large
produce fails after message.max.bytes is lowered; segments roll smaller after
log.segment.bytes is), read-only keys and bad values are refused, validate_only changes
nothing, and everything survives a restart; a damaged persisted file is a WARN."""

from __future__ import annotations

import glob
import json
import os
import warnings

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource)

from pylog.errors import PylogError
from pylog.records import RecordBatchBuilder
from pylog.server.dynamic_config import DYNAMIC_CONFIG_FILE
from tests.wire import WireClient
from server.util import unique

with warnings.catch_warnings():
    # kafka-python 3 reads its protocol schemas with importlib's deprecated open_text.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType, KafkaAdminClient

BROKER = ConfigResource.Type.BROKER
TOPIC = ConfigResource.Type.TOPIC


def _admin(server) -> AdminClient:
    return AdminClient({"bootstrap.servers": server.bootstrap})


def _describe(admin: AdminClient, rtype, name: str) -> dict:
    res = ConfigResource(rtype, name)
    return admin.describe_configs([res], request_timeout=30)[res].result(30)


def _set(admin: AdminClient, name: str, values: dict[str, str | None], *, validate_only: bool = False) -> None:
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None
                           else AlterConfigOpType.DELETE) for k, v in values.items()]
    res = ConfigResource(BROKER, name, incremental_configs=entries)
    admin.incremental_alter_configs([res], request_timeout=30, validate_only=validate_only)[res].result(30)


def _set_default(server, values: dict[str, str | None], op: int | None = None, *,
                 name: str = "") -> tuple[int, str | None]:
    """IncrementalAlterConfigs of the cluster-default resource ``""`` (librdkafka does not
    address it; nor a broker it does not know), straight over the wire: (error_code,
    error_message)."""
    from pylog.protocol import messages as m

    R = m.IncrementalAlterConfigsRequest
    body = R(resources=[R.AlterConfigsResource(resource_type=4, resource_name=name, configs=[
        R.AlterableConfig(name=k, config_operation=op if op is not None else (0 if v is not None else 1), value=v)
        for k, v in values.items()])], validate_only=False)
    with WireClient(server.bootstrap) as c:
        r = c.bootstrap.request(44, body).responses[0]
    return r.error_code, r.error_message


def _describe_default(server) -> dict[str, tuple[str, int]]:
    with WireClient(server.bootstrap) as c:
        return {e.name: (e.value, e.config_source) for e in c.describe_configs(4, "")}


def _error_of(fn) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        fn()
    return info.value.args[0]


def _produce_one(c: WireClient, topic: str, value_size: int) -> int:
    b = RecordBatchBuilder()
    b.append(None, None, b"x" * value_size)
    try:
        return c.produce(topic, 0, b.build()).error_code
    except PylogError as exc:
        return exc.error_code


def test_dynamic_broker_configs_change_at_run_time_and_survive_a_restart(serve):
    server = serve()
    admin = _admin(server)
    topic = unique("dyn")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 1)
        assert _produce_one(c, topic, 30_000) == 0

    before = _describe(admin, BROKER, "0")
    assert before["message.max.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert before["message.max.bytes"].is_read_only is False
    assert before["num.partitions"].is_read_only is True
    assert before["log.dirs"].source == ConfigSource.STATIC_BROKER_CONFIG.value

    # validate_only changes nothing.
    _set(admin, "0", {"message.max.bytes": "20000"}, validate_only=True)
    assert _describe(admin, BROKER, "0")["message.max.bytes"].value == "1048588"

    # A cluster-wide default and a per-broker value over it.
    assert _set_default(server, {"message.max.bytes": "50000", "log.segment.bytes": "4096"}) == (0, None)
    _set(admin, "0", {"message.max.bytes": "20000"})
    now = _describe(admin, BROKER, "0")
    mmb = now["message.max.bytes"]
    assert (mmb.value, mmb.source) == ("20000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    assert [(s[1], s[2]) for s in _synonyms(server, "0", "message.max.bytes")] == [
        ("20000", 2), ("50000", 3), ("1048588", 5)]
    seg = now["log.segment.bytes"]
    assert (seg.value, seg.source) == ("4096", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    # The cluster-default resource describes the cluster-wide dynamic configs only.
    assert _describe_default(server) == {
        "log.segment.bytes": ("4096", 3), "message.max.bytes": ("50000", 3)}
    # Topics without an override take the new defaults, and say where they come from.
    tcfg = _describe(admin, TOPIC, topic)
    assert (tcfg["max.message.bytes"].value, tcfg["max.message.bytes"].source) == ("20000", 2)
    assert (tcfg["segment.bytes"].value, tcfg["segment.bytes"].source) == ("4096", 3)

    def check_behaviour():
        with WireClient(server.bootstrap) as c:
            assert _produce_one(c, topic, 30_000) == 10          # MESSAGE_TOO_LARGE
            for _ in range(12):
                assert _produce_one(c, topic, 1000) == 0
        part_dir = os.path.join(server.data_dir, f"{topic}-0")
        return len(glob.glob(os.path.join(part_dir, "*.log")))

    segments = check_behaviour()
    assert segments >= 3, segments           # 12 KB in 4 KiB segments (one existed before)

    # Persisted: the same after a clean restart.
    server.restart()
    admin = _admin(server)
    again = _describe(admin, BROKER, "0")
    assert (again["message.max.bytes"].value, again["message.max.bytes"].source) == ("20000", 2)
    assert (again["log.segment.bytes"].value, again["log.segment.bytes"].source) == ("4096", 3)
    assert check_behaviour() > segments

    # Deleting the per-broker value falls back to the cluster default.
    _set(admin, "0", {"message.max.bytes": None})
    back = _describe(admin, BROKER, "0")["message.max.bytes"]
    assert (back.value, back.source) == ("50000", 3)
    with WireClient(server.bootstrap) as c:
        # A batch larger than a 4 KiB segment is RECORD_LIST_TOO_LARGE, as in Kafka.
        assert _produce_one(c, topic, 30_000) == 18
        assert _set_default(server, {"log.segment.bytes": None}) == (0, None)
        assert _produce_one(c, topic, 30_000) == 0
    server.wait_for_log(r"altered configs of broker 0 .*message\.max\.bytes \(DELETE\)")


def _synonyms(server, name: str, key: str) -> list[tuple[str, str, int]]:
    """Synonyms straight off the wire (DescribeConfigs v1+ include_synonyms)."""
    from pylog.protocol import messages as m

    with WireClient(server.bootstrap) as c:
        R = m.DescribeConfigsRequest
        body = R(resources=[R.DescribeConfigsResource(resource_type=4, resource_name=name,
                                                      configuration_keys=[key])],
                 include_synonyms=True, include_documentation=False)
        r = c.bootstrap.request(32, body).results[0]
        assert r.error_code == 0, r.error_message
        return [(s.name, s.value, s.source) for s in r.configs[0].synonyms]


def test_read_only_unknown_and_bad_values_are_refused_and_change_nothing(serve):
    server = serve()
    admin = _admin(server)
    # A Kafka broker config that cannot change at run time: INVALID_REQUEST, as Kafka.
    err = _error_of(lambda: _set(admin, "0", {"num.partitions": "3"}))
    assert err.code() == KafkaError.INVALID_REQUEST
    assert "Cannot update these configs dynamically: num.partitions" in err.str()
    code, msg = _set_default(server, {"log.retention.hours": "1"})
    assert code == 42 and "Cannot update these configs dynamically: log.retention.hours" in msg
    # A bad value (Kafka's KRaft brokers answer INVALID_REQUEST too).
    err = _error_of(lambda: _set(admin, "0", {"message.max.bytes": "lots"}))
    assert err.code() == KafkaError.INVALID_REQUEST and "message.max.bytes" in err.str()
    code, msg = _set_default(server, {"log.cleanup.policy": "shred"})
    assert code == 42 and "cleanup.policy" in msg
    # Not a broker config at all.
    err = _error_of(lambda: _set(admin, "0", {"no.such.config": "1"}))
    assert err.code() == KafkaError.INVALID_CONFIG
    # Another broker's resource.
    code, msg = _set_default(server, {"message.max.bytes": "1000"}, name="7")
    assert code == 42 and "expected 0" in msg
    # A request mixing a good and a bad config changes nothing.
    err = _error_of(lambda: _set(admin, "0", {"message.max.bytes": "1000", "log.dirs": "/tmp/x"}))
    assert err.code() == KafkaError.INVALID_REQUEST
    assert _describe(admin, BROKER, "0")["message.max.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert not os.path.exists(os.path.join(server.data_dir, DYNAMIC_CONFIG_FILE))


def test_legacy_alter_configs_replaces_the_layer_and_list_ops(serve):
    """AlterConfigs (the non-incremental API; kafka-python's alter_configs) replaces the
    resource's whole set of dynamic configs; APPEND/SUBTRACT work on list configs only."""
    server = serve()
    kadmin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        kadmin.alter_configs([KConfigResource(ConfigResourceType.BROKER, "0",
                                              configs={"log.retention.ms": "3600000",
                                                       "max.connections": "500"})])
        admin = _admin(server)
        cfg = _describe(admin, BROKER, "0")
        assert (cfg["log.retention.ms"].value, cfg["log.retention.ms"].source) == ("3600000", 2)
        assert (cfg["max.connections"].value, cfg["max.connections"].source) == ("500", 2)
    finally:
        kadmin.close()
    # kafka-python re-sends the other dynamic configs itself; a bare AlterConfigs request
    # with one config removes the rest.
    from pylog.protocol import messages as m

    R = m.AlterConfigsRequest
    with WireClient(server.bootstrap) as c:
        r = c.bootstrap.request(33, R(resources=[R.AlterConfigsResource(
            resource_type=4, resource_name="0", configs=[R.AlterableConfig(name="max.connections", value="400")])],
            validate_only=False)).responses[0]
        assert r.error_code == 0, r.error_message
    cfg = _describe(admin, BROKER, "0")
    assert cfg["log.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert cfg["max.connections"].value == "400"

    assert _set_default(server, {"log.cleanup.policy": "compact"}, op=2) == (0, None)     # APPEND
    assert _describe(admin, BROKER, "0")["log.cleanup.policy"].value == "delete,compact"
    assert _set_default(server, {"log.cleanup.policy": "delete"}, op=3) == (0, None)      # SUBTRACT
    assert _describe(admin, BROKER, "0")["log.cleanup.policy"].value == "compact"
    code, msg = _set_default(server, {"message.max.bytes": "1"}, op=2)
    assert code == 40 and "append is not allowed" in msg                                 # INVALID_CONFIG


def test_damaged_dynamic_config_file_is_a_warning_and_static_configs_apply(serve, tmp_path):
    data = tmp_path / "damaged"
    data.mkdir()
    cases = [b"\xff\xfe not json", b'{"version": 1, "default": {"num.partitions": "3"}, "brokers": {}}',
             b'{"version": 1, "default": {"message.max.bytes": "-5"}, "brokers": {}}',
             json.dumps({"version": 2, "default": {}, "brokers": {}}).encode()]
    for raw in cases:
        (data / DYNAMIC_CONFIG_FILE).write_bytes(raw)
        server = serve(data_dir=str(data), extra_args=["--override", "message.max.bytes=70000"])
        server.wait_for_log(r"WARNING pylog\.server\.config: .*dynamic-broker-configs\.json is damaged or invalid")
        cfg = _describe(_admin(server), BROKER, "0")
        assert (cfg["message.max.bytes"].value, cfg["message.max.bytes"].source) == ("70000", 4)
        assert server.stop() == 0
