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


# -- the retention synonym chain and unimplemented keys, as Kafka describes them -----------

_CHAIN = ("log.retention.ms", "log.retention.minutes", "log.retention.hours")
_STATIC, _DEFAULT, _DYN_DEFAULT, _DYN_BROKER = 4, 5, 3, 2


def _broker_configs(tmp_path, props: dict[str, str]):
    from pylog.server.config import ServerConfig
    from pylog.server.dynamic_config import DynamicBrokerConfigs

    return DynamicBrokerConfigs(ServerConfig.from_kafka({"log.dirs": str(tmp_path), **props}, warn=False))


def _chain(dyn, resource: str = "0") -> dict[str, tuple]:
    return {e.name: (e.value, e.source, e.synonyms)
            for e in dyn.describe(resource, _CHAIN, include_synonyms=True)}


@pytest.mark.parametrize("props, expected, retention_ms", [
    # Nothing set: Kafka's defaults; log.retention.ms itself is null.
    ({}, {"log.retention.ms": (None, _DEFAULT, ()),
          "log.retention.minutes": (None, _DEFAULT, ()),
          "log.retention.hours": ("168", _DEFAULT, (("log.retention.hours", "168", _DEFAULT),))},
     168 * 3_600_000),
    ({"log.retention.hours": "24"},
     {"log.retention.ms": (None, _DEFAULT, ()),
      "log.retention.minutes": (None, _DEFAULT, ()),
      "log.retention.hours": ("24", _STATIC, (("log.retention.hours", "24", _STATIC),
                                               ("log.retention.hours", "168", _DEFAULT)))},
     24 * 3_600_000),
    ({"log.retention.minutes": "30", "log.retention.hours": "24"},
     {"log.retention.ms": (None, _DEFAULT, ()),
      "log.retention.minutes": ("30", _STATIC, (("log.retention.minutes", "30", _STATIC),
                                                 ("log.retention.hours", "24", _STATIC),
                                                 ("log.retention.hours", "168", _DEFAULT))),
      "log.retention.hours": ("24", _STATIC, (("log.retention.hours", "24", _STATIC),
                                               ("log.retention.hours", "168", _DEFAULT)))},
     30 * 60_000),
    ({"log.retention.ms": "1000", "log.retention.minutes": "30"},
     {"log.retention.ms": ("1000", _STATIC, (("log.retention.ms", "1000", _STATIC),
                                             ("log.retention.minutes", "30", _STATIC),
                                             ("log.retention.hours", "168", _DEFAULT))),
      "log.retention.minutes": ("30", _STATIC, (("log.retention.minutes", "30", _STATIC),
                                                 ("log.retention.hours", "168", _DEFAULT))),
      "log.retention.hours": ("168", _DEFAULT, (("log.retention.hours", "168", _DEFAULT),))},
     1000),
])
def test_static_retention_chain_is_described_as_kafka_does(tmp_path, props, expected, retention_ms):
    dyn = _broker_configs(tmp_path, props)
    assert _chain(dyn) == expected
    # The spelling given is what is described; the setting in force is the highest one.
    assert dyn.effective.log_retention_ms == retention_ms
    for e in dyn.describe("0", _CHAIN):
        assert e.synonyms == ()                        # only with include_synonyms
        assert e.read_only is (e.name != "log.retention.ms")


def _alter(dyn, resource: str, values: dict[str, str | None]) -> None:
    ops = [(k, 0 if v is not None else 1, v) for k, v in values.items()]
    dyn.alter(resource, ops, incremental=True, validate_only=False,
              apply=lambda effective, d: None, check=lambda effective, d: None)


def test_dynamic_retention_over_static_hours_is_described_as_kafka_does(tmp_path):
    dyn = _broker_configs(tmp_path, {"log.retention.hours": "24"})
    _alter(dyn, "", {"log.retention.ms": "3600000"})
    assert dyn.effective.log_retention_ms == 3_600_000
    chain = _chain(dyn)
    assert chain["log.retention.ms"] == ("3600000", _DYN_DEFAULT, (
        ("log.retention.ms", "3600000", _DYN_DEFAULT), ("log.retention.hours", "24", _STATIC),
        ("log.retention.hours", "168", _DEFAULT)))
    assert chain["log.retention.hours"][:2] == ("24", _STATIC)
    # The cluster-default resource lists its own layer only (as Kafka 4.4 does).
    assert _chain(dyn, "") == {"log.retention.ms": (
        "3600000", _DYN_DEFAULT, (("log.retention.ms", "3600000", _DYN_DEFAULT),))}

    _alter(dyn, "0", {"log.retention.ms": "60000"})
    assert dyn.effective.log_retention_ms == 60_000
    assert _chain(dyn)["log.retention.ms"] == ("60000", _DYN_BROKER, (
        ("log.retention.ms", "60000", _DYN_BROKER), ("log.retention.ms", "3600000", _DYN_DEFAULT),
        ("log.retention.hours", "24", _STATIC), ("log.retention.hours", "168", _DEFAULT)))

    # Removing both dynamic values brings back the static hours, described as before.
    _alter(dyn, "0", {"log.retention.ms": None})
    _alter(dyn, "", {"log.retention.ms": None})
    assert dyn.effective.log_retention_ms == 24 * 3_600_000
    assert _chain(dyn) == _chain(_broker_configs(tmp_path, {"log.retention.hours": "24"}))


def test_hours_and_minutes_cannot_change_at_run_time(tmp_path):
    from pylog.errors import InvalidRequestError

    dyn = _broker_configs(tmp_path, {})
    for name in ("log.retention.hours", "log.retention.minutes", "log.roll.hours"):
        with pytest.raises(InvalidRequestError, match="Cannot update these configs dynamically"):
            _alter(dyn, "", {name: "1"})
    assert dyn.default == {} and dyn.effective.log_retention_ms == 168 * 3_600_000


def test_unimplemented_kafka_configs_are_kafka_defaults_and_read_only(tmp_path):
    from pylog.errors import InvalidConfigError, InvalidRequestError
    from pylog.server.dynamic_config import DYNAMIC_CONFIGS
    from pylog.server.kafka_broker_defaults import KAFKA_BROKER_CONFIGS

    # Set in server.properties: ignored (pylog gives them no meaning), so described as the
    # default pylog runs with.
    dyn = _broker_configs(tmp_path, {"num.io.threads": "16", "background.threads": "4"})
    entries = {e.name: e for e in dyn.describe("0", None, include_synonyms=True)}
    assert sorted(entries) == sorted(KAFKA_BROKER_CONFIGS)
    for name in ("num.io.threads", "background.threads", "num.network.threads", "ssl.keystore.location"):
        e = entries[name]
        default, ctype, dynamic_in_kafka, _sensitive = KAFKA_BROKER_CONFIGS[name]
        assert (e.value, e.source, e.read_only, e.type) == (default, _DEFAULT, True, ctype)
        with pytest.raises(InvalidRequestError, match="Cannot update these configs dynamically"):
            _alter(dyn, "0", {name: "1"})
    assert entries["num.io.threads"].value == "8"
    # Sensitive values are never shown, synonyms included.
    pw = entries["ssl.keystore.password"]
    assert (pw.is_sensitive, pw.value, pw.type) == (True, None, 9)
    # Read-only exactly where pylog cannot change the setting at run time.
    assert {n for n, e in entries.items() if not e.read_only} == DYNAMIC_CONFIGS & set(KAFKA_BROKER_CONFIGS)
    # Not a broker config at all: INVALID_CONFIG; and describe leaves it out, as Kafka does.
    with pytest.raises(InvalidConfigError):
        _alter(dyn, "0", {"no.such.config": "1"})
    assert [e.name for e in dyn.describe("0", ["no.such.config", "num.partitions"])] == ["num.partitions"]
    assert dyn.default == {} and dyn.per_broker == {}


def test_serve_config_file_retention_minutes_over_the_wire(serve, tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("log.retention.minutes=90\nnum.io.threads=4\n")
    server = serve(extra_args=["--config", str(props)])
    assert [(s[0], s[1], s[2]) for s in _synonyms(server, "0", "log.retention.minutes")] == [
        ("log.retention.minutes", "90", _STATIC), ("log.retention.hours", "168", _DEFAULT)]
    assert _synonyms(server, "0", "log.retention.ms") == []
    # Kafka's known key without meaning: one WARN naming it (issue #11).
    assert sum("num.io.threads=4 is a Kafka broker config with no meaning" in x for x in server.lines) == 1
    topic = unique("mins")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 1)
        cfg = {e.name: e for e in c.describe_configs(2, topic, ["retention.ms"])}
    assert cfg["retention.ms"].value == str(90 * 60_000)
