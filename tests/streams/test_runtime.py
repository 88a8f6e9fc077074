"""The runtime on the embedded client: internal topics, a consumer group, restore from
changelogs after a restart, global tables, at-least-once commits."""

from __future__ import annotations

import pytest

import pylog
from pylog.streams import Serdes, StreamsApp, StreamsBuilder, TopologyError
from server.conftest import module_server  # noqa: F401  (one `pylog serve` for this module)

S = Serdes.string()
L = Serdes.long()


def word_count(state_dir, app_id="wc"):
    """The word count app; every instance keeps its stores under its own ``state_dir``
    (never the shared default under the system's temporary directory)."""
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    (b.stream("lines").flat_map_values(lambda v: v.split()).group_by(lambda k, w: w)
     .count(materialized="counts").to_stream().to("counts", value_serde=L))
    return b.build(application_id=app_id, config={"commit.interval.ms": 50, "state.dir": str(state_dir)})


def produce(client, topic, pairs):
    p = client.producer()
    for k, v in pairs:
        p.send(topic, key=k.encode(), value=v.encode())
    p.flush()
    p.close()


def read_all(client, topic):
    c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
    parts = [(topic, p) for p in range(client.num_partitions(topic))]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    ends = c.end_offsets(parts)
    out = []
    while any(c.position(tp) < end for tp, end in ends.items()):
        out.extend(c.poll(timeout_ms=200))
    c.close(autocommit=False)
    return out


def final_counts(client):
    return {S.deserialize(r.key): L.deserialize(r.value) for r in
            sorted(read_all(client, "counts"), key=lambda r: (r.partition, r.offset))}


def test_word_count_runs_embedded_and_restores_after_restart(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("lines", 2)
        client.create_topic("counts", 2)
        produce(client, "lines", [("a", "x y x"), ("b", "y z")])
        app = word_count(tmp_path / "state")
        assert isinstance(app, StreamsApp)
        app.run(client, until_idle=True)
        assert final_counts(client) == {"x": 2, "y": 2, "z": 1}
        assert client.num_partitions("wc-counts-repartition") == 2
        assert client.num_partitions("wc-counts-changelog") == 2
        # a new instance of the app: its tasks restore the counts from the changelog and
        # the group's committed offsets keep the old lines from being counted twice
        produce(client, "lines", [("c", "x z")])
        app2 = word_count(tmp_path / "state")
        app2.run(client, until_idle=True)
        assert final_counts(client) == {"x": 3, "y": 2, "z": 2}
        assert app2.active_tasks() <= {"0_0", "0_1", "1_0", "1_1"}


def test_word_count_runs_on_pylog_serve_through_the_kafka_protocol(module_server, tmp_path):  # noqa: F811
    with pylog.connect(module_server.bootstrap) as client:
        client.create_topic("lines", 2)
        client.create_topic("counts", 2)
        produce(client, "lines", [("a", "x y x"), ("b", "y z")])
        word_count(tmp_path / "state", "remote-wc").run(client, until_idle=True, idle_polls=5)
        assert final_counts(client) == {"x": 2, "y": 2, "z": 1}
        assert client.num_partitions("remote-wc-counts-changelog") == 2


def test_global_table_is_bootstrapped_before_processing(tmp_path):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    regions = b.global_table("regions")
    b.stream("orders").join(regions, lambda o, r: f"{o}@{r}", key_selector=lambda k, v: v).to("out")
    with pylog.open(tmp_path / "data") as client:
        for t in ("regions", "orders", "out"):
            client.create_topic(t, 1)
        produce(client, "regions", [("eu", "Europe")])
        produce(client, "orders", [("o1", "eu"), ("o2", "us")])
        b.build("g", {"commit.interval.ms": 50, "state.dir": str(tmp_path / "state")}).run(client, until_idle=True)
        assert [(r.key, r.value) for r in read_all(client, "out")] == [(b"o1", b"eu@Europe")]


def test_joined_topics_must_be_co_partitioned(tmp_path):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    b.stream("clicks").join(b.table("users"), lambda c, u: c).to("out")
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("clicks", 2)
        client.create_topic("users", 3)
        app = b.build("cp", {"state.dir": str(tmp_path / "state")})
        states = []
        app.set_state_listener(lambda new, old: states.append(new))
        with pytest.raises(TopologyError, match="co-partition"):
            app.run(client, until_idle=True)
        # a run that fails before it processes closes what it opened and ends in ERROR
        assert app.producer is not None and app.producer.closed
        assert states == [app.State.PENDING_ERROR, app.State.ERROR]


def two_instances_hand_over(client, make_app, late):
    """4-partition "lines" (40 lines, then ``late``) processed by two instances
    ``make_app("state-1")`` and ``make_app("state-2")``: the second joins while the first
    runs, runs until idle, then again after ``late`` is produced; then the first stops.
    Returns the two apps."""
    import threading

    client.create_topic("lines", 4)
    client.create_topic("counts", 4)
    produce(client, "lines", [(f"k{i}", "x y" if i % 2 else "y z") for i in range(40)])
    first = make_app("state-1")
    t = threading.Thread(target=first.run, args=(client,), kwargs={"poll_timeout_ms": 50})
    t.start()
    try:
        second = make_app("state-2")
        second.run(client, until_idle=True, idle_polls=20, poll_timeout_ms=50)
        produce(client, "lines", [late])
        second.run(client, until_idle=True, idle_polls=20, poll_timeout_ms=50)
    finally:
        first.stop()
        t.join(timeout=150)   # a member that left uncleanly is waited for a session timeout
    assert not t.is_alive()
    return first, second


def test_two_instances_share_the_partitions_and_hand_tasks_over(tmp_path):
    """A second instance joins the group while the first runs: the first commits and
    closes the tasks it gives up, the second rebuilds them from their changelogs, and
    the final counts are those of one instance."""
    with pylog.open(tmp_path / "data") as client:
        two_instances_hand_over(client, lambda d: word_count(tmp_path / d, "shared"), ("late", "x"))
        assert final_counts(client) == {"x": 21, "y": 40, "z": 20}
