"""A foreign-key join run by the runtime (StreamsApp): subscriptions and responses go
through real internal topics, on ``pylog serve`` (the Kafka protocol) and embedded;
responses return to the partition of the row that subscribed, and the two tables need
not have the same number of partitions."""

from __future__ import annotations

import pylog
from pylog.streams import Serdes, StreamsBuilder
from server.conftest import module_server  # noqa: F401  (one `pylog serve` for this module)

from .test_runtime import read_all

S = Serdes.string()
SUB = "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic"
RESP = "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-0000000014-topic"


def orders_with_customers(app_id, state_dir):
    """orders (key order id, value "<customer id>:<item>") left-joined with customers."""
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    orders, customers = b.table("orders"), b.table("customers")
    (orders.left_join(customers, lambda v: v.split(":")[0], lambda o, c: f"{o}@{c}")
     .to_stream().to("enriched"))
    return b.build(application_id=app_id, config={"commit.interval.ms": 50, "state.dir": str(state_dir)})


def produce(client, topic, pairs):
    """Keyed string records; a ``None`` value is a tombstone."""
    p = client.producer()
    for k, v in pairs:
        p.send(topic, key=k.encode(), value=None if v is None else v.encode())
    p.flush()
    p.close()


def final_table(client, topic):
    table = {}
    for r in sorted(read_all(client, topic), key=lambda r: (r.partition, r.offset)):
        k = S.deserialize(r.key)
        if r.value is None:
            table.pop(k, None)
        else:
            table[k] = S.deserialize(r.value)
    return table


def run_join(client, app_id, tmp_path, idle_polls, order_partitions, customer_partitions):
    client.create_topic("orders", order_partitions)
    client.create_topic("customers", customer_partitions)
    client.create_topic("enriched", 2)
    produce(client, "customers", [("c1", "Ann"), ("c2", "Bob"), ("c3", "Cy")])
    produce(client, "orders", [(f"o{i}", f"c{i % 4}:item{i}") for i in range(12)])
    orders_with_customers(app_id, tmp_path / "state").run(client, until_idle=True, idle_polls=idle_polls)
    # later updates: a customer changes, one goes, an order moves to another customer
    produce(client, "customers", [("c1", "Ann B."), ("c3", None)])
    produce(client, "orders", [("o0", "c2:item0"), ("o5", None)])
    orders_with_customers(app_id, tmp_path / "state").run(client, until_idle=True, idle_polls=idle_polls)
    names = {0: "None", 1: "Ann B.", 2: "Bob", 3: "None"}
    expected = {f"o{i}": f"c{i % 4}:item{i}@{names[i % 4]}" for i in range(12) if i != 5}
    expected["o0"] = "c2:item0@Bob"
    assert final_table(client, "enriched") == expected
    # the internal topics exist under the application id, co-partitioned as Kafka does:
    # subscriptions like the right table's topic, responses like the left one's
    assert client.num_partitions(f"{app_id}-{SUB}") == customer_partitions
    assert client.num_partitions(f"{app_id}-{RESP}") == order_partitions
    # every response went back to the partition of its order
    by_key = {}
    for r in read_all(client, "orders"):
        by_key[r.key] = r.partition
    for r in read_all(client, f"{app_id}-{RESP}"):
        assert r.partition == by_key[r.key]


def test_fk_join_on_pylog_serve(module_server, tmp_path):  # noqa: F811
    with pylog.connect(module_server.bootstrap) as client:
        run_join(client, "fk-remote", tmp_path, idle_polls=5, order_partitions=3, customer_partitions=2)


def test_fk_join_embedded(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        run_join(client, "fk-embedded", tmp_path, idle_polls=3, order_partitions=2, customer_partitions=2)
