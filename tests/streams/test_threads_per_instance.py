"""Stream threads per instance (Kafka's ``num.stream.threads``, ``addStreamThread``,
``removeStreamThread``): each thread is a member of the group with its own consumer,
the assignor splits the instance's tasks over its threads, interactive queries read
every thread's stores, exactly-once gives each thread its own transactional id, and
REPLACE_THREAD replaces only the thread that failed."""

from __future__ import annotations

import threading

import pytest

import pylog
from pylog import _core
from pylog.streams import QueryableStoreTypes, Serdes, StoreQueryParameters, StreamsBuilder
from pylog.streams.errors import State, StreamThreadExceptionResponse
from server.conftest import module_server, wait_until  # noqa: F401  (one `pylog serve` for this module)

from . import test_interactive_queries

S = Serdes.string()
COUNTS = StoreQueryParameters.from_name_and_type("counts", QueryableStoreTypes.key_value_store())
KEYS = [f"k{i}" for i in range(20)]


class Running(test_interactive_queries.Running):
    """``app.run(client)`` on a thread, stopped on exit; what run raised is kept."""

    def __init__(self, app, client):
        super().__init__(app, client)
        self.error = []
        self.thread = threading.Thread(target=self._run, args=(client,))

    def _run(self, client):
        try:
            self.app.run(client, poll_timeout_ms=20)
        except BaseException as exc:
            self.error.append(exc)

    def __exit__(self, *exc):
        super().__exit__(*exc)
        assert not self.error, self.error


def counting_app(tmp_path, app_id, mapper=None, **config):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    words = b.stream("words")
    if mapper is not None:
        words = words.map_values(mapper)
    words.group_by_key().count(materialized="counts")
    return b.build(app_id, {"commit.interval.ms": 50, "state.dir": str(tmp_path / app_id), **config})


def produce(client, keys):
    p = client.producer()
    for k in keys:
        p.send("words", key=k.encode(), value=b"")
    p.flush()
    p.close()


def counts(app):
    try:
        view = app.store(COUNTS)
        return {k: view.get(k) for k in KEYS}
    except pylog.errors.PylogError:
        return None


def split(app):
    return [len(t.tasks) for t in app.stream_threads()]


def settled(app, n):
    threads = app.stream_threads()
    members = {t.consumer.member_id() for t in threads if t.consumer is not None}
    return (app.state is State.RUNNING and len(threads) == n and len(members) == n
            and sum(split(app)) == 4 and max(split(app)) - min(split(app)) <= 1 and min(split(app)) >= 1)


def test_threads_share_the_tasks_and_come_and_go_while_queries_answer(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 4)
        produce(client, KEYS)
        expected = {k: 1 for k in KEYS}
        app = counting_app(tmp_path, "threads", **{"num.stream.threads": 2})
        states = []
        app.set_state_listener(lambda new, old: states.append((old, new)))
        with Running(app, client):
            wait_until(lambda: settled(app, 2), what="two threads with two tasks each")
            assert sorted(split(app)) == [2, 2]
            assert app.active_tasks() == {"0_0", "0_1", "0_2", "0_3"}
            wait_until(lambda: counts(app) == expected, what="the counts, read across both threads")
            # a third thread takes a task; the others keep theirs
            before = {t.thread_index: dict(t.tasks) for t in app.stream_threads()}
            seen = len(states)
            name = app.add_stream_thread()
            assert name.endswith("-StreamThread-3")
            wait_until(lambda: settled(app, 3), what="three threads")
            # the instance rebalanced with its new thread, and runs once every thread does
            assert (State.RUNNING, State.REBALANCING) in states[seen:]
            assert states[-1] == (State.REBALANCING, State.RUNNING)
            assert all(t.state is State.RUNNING for t in app.stream_threads())
            for t in app.stream_threads()[:2]:
                kept = {k: v for k, v in t.tasks.items()}
                assert all(before[t.thread_index].get(k) is v for k, v in kept.items()), \
                    "a task that stayed on its thread was rebuilt"
            produce(client, KEYS[:5])
            expected.update({k: 2 for k in KEYS[:5]})
            wait_until(lambda: counts(app) == expected, what="new input counted by three threads")
            # and it goes again: its tasks return to the other two
            assert app.remove_stream_thread() == name
            wait_until(lambda: settled(app, 2), what="two threads again")
            produce(client, KEYS[5:10])
            expected.update({k: 2 for k in KEYS[5:10]})
            wait_until(lambda: counts(app) == expected, what="new input counted by two threads")
            assert app.remove_stream_thread() is None or len(app.stream_threads()) == 1


def test_exactly_once_threads_have_their_own_transactional_ids(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 4)
        produce(client, KEYS)
        app = counting_app(tmp_path, "eos-threads", **{"num.stream.threads": 2,
                                                      "processing.guarantee": "exactly_once_v2"})
        with Running(app, client):
            wait_until(lambda: settled(app, 2), what="two threads")
            pid = app.process_id()
            assert [t.transactional_id() for t in app.stream_threads()] == [f"eos-threads-{pid}-1",
                                                                           f"eos-threads-{pid}-2"]
            wait_until(lambda: counts(app) == {k: 1 for k in KEYS}, what="the counts")


def test_replace_thread_replaces_only_the_thread_that_failed(tmp_path):
    failures = []

    def fail_once(v):
        if v == "boom" and not failures:
            failures.append(v)
            raise RuntimeError("cannot process boom")
        return v

    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 4)
        app = counting_app(tmp_path, "replace", fail_once, **{"num.stream.threads": 2})
        app.set_uncaught_exception_handler(lambda exc: StreamThreadExceptionResponse.REPLACE_THREAD)
        with Running(app, client):
            wait_until(lambda: settled(app, 2), what="two threads")
            partition = _core.partition_for_key(b"x", 4)
            failing = next(t for t in app.stream_threads() if (0, partition) in t.tasks)
            other = next(t for t in app.stream_threads() if t is not failing)
            other_tasks = dict(other.tasks)
            failing_member = failing.consumer.member_id()
            p = client.producer()
            assert p.send("words", key=b"x", value=b"boom").get().partition == partition
            p.close()
            wait_until(lambda: failures and failing.consumer.member_id() not in ("", failing_member)
                       and settled(app, 2), what="the failed thread replaced")
            assert all(other.tasks.get(k) is v for k, v in other_tasks.items()), "the other thread's tasks moved"
            wait_until(lambda: (counts(app) or {}).get("k0") is None and _count(app, "x") == 1,
                       what="the record processed again by the new thread")


def _count(app, key):
    try:
        return app.store(COUNTS).get(key)
    except pylog.errors.PylogError:
        return None


def test_bad_thread_settings_are_refused(tmp_path):
    with pytest.raises(ValueError):
        counting_app(tmp_path, "bad", **{"num.stream.threads": 0})
    app = counting_app(tmp_path, "idle")
    assert app.add_stream_thread() is None      # not running
    assert app.remove_stream_thread() is None


@pytest.mark.parametrize("handler", [None, StreamThreadExceptionResponse.SHUTDOWN_CLIENT])
def test_an_error_in_an_added_thread_stops_the_whole_instance(tmp_path, handler):
    def fail(v):
        if v == "boom":
            raise RuntimeError("cannot process boom")
        return v

    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 4)
        app = counting_app(tmp_path, "fail", fail, **{"num.stream.threads": 2})
        if handler is not None:
            app.set_uncaught_exception_handler(lambda exc: handler)
        run = Running(app, client)
        run.thread.start()
        wait_until(lambda: settled(app, 2), what="two threads")
        partition = next(p for g, p in app.stream_threads()[1].tasks)
        key = next(k for k in (f"x{i}".encode() for i in range(100)) if _core.partition_for_key(k, 4) == partition)
        p = client.producer()
        p.send("words", key=key, value=b"boom")
        p.close()
        run.thread.join(timeout=60)
        assert not run.thread.is_alive()
        assert app.state is State.ERROR
        if handler is None:
            [exc] = run.error
            assert "cannot process boom" in str(exc)
        else:
            assert run.error == []
        assert [t.thread_index for t in app.stream_threads()] == [1] and app.active_tasks() == set()


def test_two_threads_on_pylog_serve(module_server, tmp_path):  # noqa: F811
    with pylog.connect(module_server.bootstrap) as client:
        client.create_topic("words", 4)
        produce(client, KEYS)
        app = counting_app(tmp_path, "remote-threads", **{"num.stream.threads": 2})
        with Running(app, client):
            wait_until(lambda: settled(app, 2), what="two threads", timeout=60)
            wait_until(lambda: counts(app) == {k: 1 for k in KEYS}, what="the counts", timeout=60)


def test_metadata_for_local_threads(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 4)
        app = counting_app(tmp_path, "meta", **{"num.stream.threads": 2, "num.standby.replicas": 1})
        with Running(app, client):
            wait_until(lambda: settled(app, 2), what="two threads")
            threads = app.metadata_for_local_threads()
            pid = app.process_id()
            assert [t.thread_name for t in threads] == [f"meta-{pid}-StreamThread-1", f"meta-{pid}-StreamThread-2"]
            assert [t.consumer_client_id for t in threads] == [f"{t.thread_name}-consumer" for t in threads]
            assert all(t.thread_state == "RUNNING" for t in threads)
            tasks = sorted(m for t in threads for m in t.active_tasks)
            assert [m.task_id for m in tasks] == ["0_0", "0_1", "0_2", "0_3"]
            assert all(m.topic_partitions == {("words", int(m.task_id[2:]))} for m in tasks)
            # one instance: no other to hold standbys
            assert all(not t.standby_tasks for t in threads)
