"""Interactive queries (Kafka Streams' ``KafkaStreams#store`` and routing metadata): a
running app's key-value, window and session stores read by key, range and window,
embedded and on ``pylog serve``; two instances route each key to the instance that
holds its partition, and that instance's store answers for it."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import pylog
from pylog.streams import (HostInfo, InvalidStateStoreError, KeyQueryMetadata, QueryableStoreTypes, Serdes,
                           SessionWindows, StoreQueryParameters, StreamsBuilder, TimeWindows, Window, Windowed)
from server.conftest import module_server, wait_until  # noqa: F401  (one `pylog serve` for this module)

S = Serdes.string()
L = Serdes.long()
KV = StoreQueryParameters.from_name_and_type("counts", QueryableStoreTypes.key_value_store())
WINDOWS = StoreQueryParameters.from_name_and_type("per-10ms", QueryableStoreTypes.window_store())
SESSIONS = StoreQueryParameters.from_name_and_type("sessions", QueryableStoreTypes.session_store())
#: Keeps every window of the tests in the stores (retention is size + grace).
GRACE = timedelta(milliseconds=500)
#: (key, timestamp) of the input, produced in this order.
WORDS = [("a", 1), ("b", 2), ("a", 5), ("c", 12), ("a", 14), ("b", 40)]


def counting_app(state_dir, app_id, server=None):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    words = b.stream("words")
    words.group_by_key().count(materialized="counts").to_stream().to("counts", value_serde=L)
    words.group_by_key().windowed_by(TimeWindows.of_size_and_grace(timedelta(milliseconds=10), GRACE)) \
        .count(materialized="per-10ms")
    words.group_by_key().windowed_by(SessionWindows.of_inactivity_gap_and_grace(timedelta(milliseconds=5), GRACE)) \
        .count(materialized="sessions")
    config = {"commit.interval.ms": 50, "state.dir": str(state_dir)}
    if server:
        config["application.server"] = server
    return b.build(application_id=app_id, config=config)


def produce(client, words):
    p = client.producer()
    futures = [p.send("words", key=k.encode(), value=b"", timestamp_ms=t) for k, t in words]
    p.flush()
    partitions = {k: f.get().partition for (k, _), f in zip(words, futures)}
    p.close()
    return partitions


def wait_for_counts(client, n):
    """Block until ``counts`` holds ``n`` records: the input is processed, and a query
    (which waits for the batch being processed) sees all of it."""
    c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
    parts = [("counts", p) for p in range(client.num_partitions("counts"))]
    c.assign(parts)
    got = 0
    while got < n:
        got += len(c.poll(timeout_ms=200))
    c.close(autocommit=False)


class Running:
    """``app.run(client)`` on a thread, stopped on exit."""

    def __init__(self, app, client):
        self.app = app
        self.thread = threading.Thread(target=app.run, args=(client,), kwargs={"poll_timeout_ms": 20})

    def __enter__(self):
        self.thread.start()
        return self.app

    def __exit__(self, *exc):
        self.app.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def check_queries(app):
    kv = app.store(KV)
    assert kv.get("a") == 3 and kv.get("b") == 2 and kv.get("nope") is None
    assert kv.range("a", "b") == [("a", 3), ("b", 2)]
    assert sorted(kv.all()) == [("a", 3), ("b", 2), ("c", 1)]
    assert kv.approximate_num_entries() == 3
    windows = app.store(WINDOWS)
    assert windows.fetch("a", 0, 20) == [(0, 2), (10, 1)]
    assert windows.fetch("a", 10) == 1 and windows.fetch("b", 10) is None
    assert sorted(windows.all(), key=lambda e: (e[0].key, e[0].window.start)) == [
        (Windowed("a", Window(0, 10)), 2), (Windowed("a", Window(10, 20)), 1), (Windowed("b", Window(0, 10)), 1),
        (Windowed("b", Window(40, 50)), 1), (Windowed("c", Window(10, 20)), 1)]
    sessions = app.store(SESSIONS)
    assert sessions.fetch("a") == [(Windowed("a", Window(1, 5)), 2), (Windowed("a", Window(14, 14)), 1)]
    assert sessions.fetch_session("b", 40, 40) == 1


def test_queries_on_a_running_embedded_app(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 1)
        client.create_topic("counts", 1)
        app = counting_app(tmp_path / "state", "iq")
        with pytest.raises(InvalidStateStoreError, match="not running"):
            app.store(KV)
        produce(client, WORDS)
        with Running(app, client):
            wait_for_counts(client, len(WORDS))
            check_queries(app)
            with pytest.raises(InvalidStateStoreError, match="not the window store"):
                app.store(StoreQueryParameters.from_name_and_type("counts", QueryableStoreTypes.window_store()))
            with pytest.raises(InvalidStateStoreError, match="no store named"):
                app.store(StoreQueryParameters.from_name_and_type("nope", QueryableStoreTypes.key_value_store()))
            assert app.store(KV.with_partition(0)).get("a") == 3
            with pytest.raises(InvalidStateStoreError, match="for partition 1 is not on this instance"):
                app.store(KV.with_partition(1)).get("a")
            # no application.server: the key's partition, but no instance to route to
            assert app.query_metadata_for_key("counts", "a", S) == KeyQueryMetadata(
                HostInfo("unavailable", -1), frozenset(), 0)
            view = app.store(KV)
        with pytest.raises(InvalidStateStoreError, match="not running"):
            view.get("a")


def test_queries_on_pylog_serve_and_the_restored_store_after_a_restart(module_server, tmp_path):  # noqa: F811
    with pylog.connect(module_server.bootstrap) as client:
        client.create_topic("words", 1)
        client.create_topic("counts", 1)
        produce(client, WORDS)
        with Running(counting_app(tmp_path / "state", "iq-remote", "127.0.0.1:7070"), client) as app:
            wait_for_counts(client, len(WORDS))
            check_queries(app)
            meta = app.query_metadata_for_key("counts", "a", S)
            assert meta == KeyQueryMetadata(HostInfo("127.0.0.1", 7070), frozenset(), 0)
        # a restarted instance answers from its restored stores before any new input
        with Running(counting_app(tmp_path / "state", "iq-remote", "127.0.0.1:7070"), client) as app:
            # the store answers once the member has its assignment and the task is restored
            kv = wait_until(lambda: _try(lambda: app.store(KV).all() and app.store(KV)), what="the restored store")
            assert sorted(kv.all()) == [("a", 3), ("b", 2), ("c", 1)]
            assert app.store(WINDOWS).fetch("a", 0, 20) == [(0, 2), (10, 1)]


def _try(query):
    try:
        return query()
    except InvalidStateStoreError:
        return None


def test_two_instances_route_each_key_to_the_instance_holding_it(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 4)
        client.create_topic("counts", 4)
        one = counting_app(tmp_path / "state-1", "iq-two", "127.0.0.1:7001")
        two = counting_app(tmp_path / "state-2", "iq-two", "127.0.0.1:7002")
        with Running(one, client), Running(two, client):
            def settled():
                metas = [app.metadata_for_all_stream_clients() for app in (one, two)]
                if metas[0] != metas[1] or len(metas[0]) != 2:
                    return None
                held = [{p for t, p in m.topic_partitions if t == "words"} for m in metas[0]]
                return metas[0] if held[0] | held[1] == {0, 1, 2, 3} and held[0] and held[1] else None
            metas = wait_until(settled, what="both instances in the group")
            assert {m.host_info for m in metas} == {HostInfo("127.0.0.1", 7001), HostInfo("127.0.0.1", 7002)}
            assert all(m.state_store_names == {"counts", "per-10ms", "sessions"} for m in metas)
            assert one.streams_metadata_for_store("counts") == metas
            keys = [f"k{i}" for i in range(12)]
            words = [(k, 101) for k in keys] + [(k, 200) for k in keys[:6]]
            partitions = produce(client, words)
            wait_for_counts(client, len(words))
            by_host = {HostInfo("127.0.0.1", 7001): one, HostInfo("127.0.0.1", 7002): two}
            owners = set()
            for i, k in enumerate(keys):
                meta = one.query_metadata_for_key("counts", k, S)
                assert meta == two.query_metadata_for_key("counts", k, S)
                assert meta.partition == partitions[k]
                owner = by_host[meta.active_host]
                other = two if owner is one else one
                owners.add(meta.active_host)
                expected = 2 if i < 6 else 1
                assert owner.store(KV).get(k) == expected
                assert other.store(KV).get(k) is None
                assert owner.store(WINDOWS).fetch(k, 100, 300) == ([(100, 1), (200, 1)] if i < 6 else [(100, 1)])
            assert len(owners) == 2
