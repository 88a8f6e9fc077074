"""Connection caps changed at run time (issue #17), against ``pylog serve``:
``max.connections.per.ip`` and ``max.connections.per.ip.overrides`` are dynamic broker
configs, as in Kafka (per broker with librdkafka's AdminClient, cluster-wide default
``""`` over the wire, since librdkafka does not address it); DescribeConfigs shows each
with its source and as not read-only; a lowered cap refuses the next connection from that
address and closes none already open; a raised one admits again; a cap that would refuse
every client is INVALID_REQUEST; the caps survive a restart.

Clients come from distinct loopback addresses (127.0.0.2, 127.0.0.3: a socket bound there
before it connects), so the admin client's own connections (from 127.0.0.1) are not
counted against the caps under test."""

from __future__ import annotations

import socket

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource

from pylog.protocol import messages as m
from server.test_connection_caps import served
from tests.wire import WireClient

BROKER = ConfigResource.Type.BROKER


def _connect_from(server, source_ip: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(30)   # a safety net, not a timing
    s.bind((source_ip, 0))
    s.connect((server.host, server.port))
    return s


def _refused(server, source_ip: str) -> bool:
    """A new connection from ``source_ip`` is accepted and closed by the server at once."""
    s = _connect_from(server, source_ip)
    try:
        return not served(s)
    finally:
        s.close()


def _set(admin: AdminClient, values: dict[str, str | None]) -> None:
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None
                           else AlterConfigOpType.DELETE) for k, v in values.items()]
    res = ConfigResource(BROKER, "0", incremental_configs=entries)
    admin.incremental_alter_configs([res], request_timeout=30)[res].result(30)


def _describe(admin: AdminClient) -> dict:
    res = ConfigResource(BROKER, "0")
    return admin.describe_configs([res], request_timeout=30)[res].result(30)


def _set_default(server, values: dict[str, str]) -> int:
    """IncrementalAlterConfigs SET of the cluster-default resource ``""``: its error code."""
    R = m.IncrementalAlterConfigsRequest
    body = R(resources=[R.AlterConfigsResource(resource_type=4, resource_name="", configs=[
        R.AlterableConfig(name=k, config_operation=0, value=v) for k, v in values.items()])],
        validate_only=False)
    with WireClient(server.bootstrap) as c:
        return c.bootstrap.request(44, body).responses[0].error_code


@pytest.fixture
def loopback_aliases():
    """Skip where 127.0.0.2 cannot be bound (not Linux's whole 127/8 loopback)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 is not a local address here")
    finally:
        s.close()


def test_per_ip_caps_change_at_run_time_and_keep_open_connections(serve, loopback_aliases):
    server = serve()
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    entries = _describe(admin)
    for name in ("max.connections", "max.connections.per.ip", "max.connections.per.ip.overrides"):
        assert not entries[name].is_read_only
        assert entries[name].source == ConfigSource.DEFAULT_CONFIG.value

    two = [_connect_from(server, "127.0.0.2") for _ in range(2)]
    assert all(served(s) for s in two)

    # Lower 127.0.0.2's cap below what it holds: both stay open and served, a third is refused.
    _set(admin, {"max.connections.per.ip.overrides": "127.0.0.2:1"})
    assert all(served(s) for s in two)
    assert _refused(server, "127.0.0.2")
    # Other addresses are not affected by that override.
    other = _connect_from(server, "127.0.0.3")
    assert served(other)

    # The per-IP default, per broker: 127.0.0.3 already holds one, so a second is refused;
    # the admin client's address is lifted by an override in the same change.
    _set(admin, {"max.connections.per.ip": "1",
                 "max.connections.per.ip.overrides": "127.0.0.1:1000,127.0.0.2:1"})
    assert _refused(server, "127.0.0.3")
    assert served(other)
    entries = _describe(admin)
    assert entries["max.connections.per.ip"].value == "1"
    assert entries["max.connections.per.ip"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert entries["max.connections.per.ip.overrides"].value == "127.0.0.1:1000,127.0.0.2:1"

    # Raising it again admits a new connection; closing one of 127.0.0.2's makes no room
    # while it is still above its cap of one (one open = at the cap).
    _set(admin, {"max.connections.per.ip": None})
    again = _connect_from(server, "127.0.0.3")
    assert served(again)
    two[0].close()
    assert served(two[1])
    assert _refused(server, "127.0.0.2")

    # A cap refusing every client is refused itself, and changes nothing.
    with pytest.raises(KafkaException) as info:
        _set(admin, {"max.connections.per.ip": "0", "max.connections.per.ip.overrides": None})
    assert info.value.args[0].code() == KafkaError.INVALID_REQUEST
    assert _describe(admin)["max.connections.per.ip.overrides"].value == "127.0.0.1:1000,127.0.0.2:1"
    for s in two[1:] + [other, again]:
        s.close()
    del admin


def test_cluster_default_caps_apply_and_survive_a_restart(serve, loopback_aliases):
    server = serve()
    assert _set_default(server, {"max.connections.per.ip.overrides": "127.0.0.2:1"}) == 0
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    entry = _describe(admin)["max.connections.per.ip.overrides"]
    assert (entry.value, entry.source) == ("127.0.0.2:1", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    first = _connect_from(server, "127.0.0.2")
    assert served(first)
    assert _refused(server, "127.0.0.2")
    first.close()
    del admin

    server.restart()
    first = _connect_from(server, "127.0.0.2")
    assert served(first)
    assert _refused(server, "127.0.0.2")
    first.close()
