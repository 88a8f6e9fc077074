"""ListGroups v5 (KIP-848): the TypesFilter of the request and the GroupType of each group
in the answer.  Every group pylog runs is a ``classic`` group, so a filter naming only
``consumer`` lists nothing.  Checked on the wire with pylog's own codec at v4 and v5, and
with the admin clients of kafka-python and confluent-kafka, which send v5 when asked to
filter by type."""

from __future__ import annotations

import warnings

import pytest

from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response
from tests.wire import WireClient
from tests.server.test_versions import raw_roundtrip
from tests.server.util import unique


@pytest.fixture(scope="module")
def groups(module_server):
    """Two groups on the shared server that only commit offsets (so Empty); their ids."""
    topic = unique("lg")
    ids = [unique("lg-a"), unique("lg-b")]
    with WireClient(module_server.bootstrap) as c:
        c.create_topic(topic, 1)
        for g in ids:
            c.commit(g, {(topic, 0): 0})
    return module_server, ids


def _list(server, version, **filters):
    frame = raw_roundtrip((server.host, server.port), 16, version, m.ListGroupsRequest(**filters))
    _corr, resp = decode_response(16, version, frame)
    assert resp.error_code == 0
    return {g.group_id: g for g in resp.groups}


def test_v5_answers_the_group_type_of_every_group(groups):
    server, ids = groups
    listed = _list(server, 5)
    for g in ids:
        assert listed[g].group_type == "classic"
        assert listed[g].group_state == "Empty"


@pytest.mark.parametrize("types,expect_listed", [
    (["classic"], True),
    (["CLASSIC"], True),              # Kafka parses type names case-insensitively
    (["consumer", "classic"], True),
    (["consumer"], False),
    (["share"], False),
    ([], True),                       # empty: no filter
])
def test_v5_filters_by_group_type(groups, types, expect_listed):
    server, ids = groups
    listed = _list(server, 5, types_filter=types)
    assert (set(ids) <= set(listed)) is expect_listed
    if not expect_listed:
        assert listed == {}


def test_v5_combines_type_and_state_filters(groups):
    server, ids = groups
    assert set(ids) <= set(_list(server, 5, types_filter=["classic"], states_filter=["Empty"]))
    assert not set(ids) & set(_list(server, 5, types_filter=["classic"], states_filter=["Stable"]))


def test_v4_still_filters_by_state(groups):
    server, ids = groups
    listed = _list(server, 4, states_filter=["empty"])
    assert set(ids) <= set(listed)


def test_kafka_python_admin_filters_by_type(groups):
    with warnings.catch_warnings():
        # kafka-python loads its message schemas through importlib.resources' legacy API.
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.admin import KafkaAdminClient

    server, ids = groups
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=10000)
    try:
        classic = {g["group_id"]: g for g in admin.list_groups(types_filter=["classic"])}
        assert set(ids) <= set(classic)
        assert {classic[g]["group_type"] for g in ids} == {"classic"}
        assert admin.list_groups(types_filter=["consumer"]) == []
    finally:
        admin.close()


def test_confluent_admin_lists_consumer_groups_by_type(groups):
    from confluent_kafka import ConsumerGroupType
    from confluent_kafka.admin import AdminClient

    server, ids = groups
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    res = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}, request_timeout=10).result(timeout=20)
    assert not res.errors
    by_id = {g.group_id: g for g in res.valid}
    assert set(ids) <= set(by_id)
    assert {by_id[g].type for g in ids} == {ConsumerGroupType.CLASSIC}
    res = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}, request_timeout=10).result(timeout=20)
    assert not res.errors
    assert not {g.group_id for g in res.valid} & set(ids)
