"""A flush policy (``flush.messages`` / ``flush.ms``) makes appends fsync before they
return; the server then appends from its I/O pool, so no fsync ever runs on the event
loop's thread (where it would stall every connection).  Other Produce requests stay on
the loop (no thread hop on the hot path), a partition's first append in a leader epoch
too: it replaces ``leader-epoch-checkpoint`` without fsync (made durable at the next
flush)."""

from __future__ import annotations

import os
import threading

import pytest

from pylog.records import RecordBatchBuilder
from pylog.server.config import ServerConfig
from pylog.server.server import ServerThread
from tests.wire import WireClient
from server.util import unique


def batch(values):
    b = RecordBatchBuilder()
    for v in values:
        b.append(None, None, v)
    return b.build()


@pytest.fixture
def fsync_threads(monkeypatch):
    """Names of the threads each os.fsync ran on, while the test runs."""
    seen: list[str] = []
    real = os.fsync

    def recording(fd):
        seen.append(threading.current_thread().name)
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return seen


def _loop_thread_name(st: ServerThread) -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    return names[st.server._thread_id]


def test_produce_and_commit_with_a_flush_policy_fsync_off_the_loop(tmp_path, fsync_threads):
    # log.flush.interval.messages applies to every topic, the offsets topic included.
    cfg = ServerConfig.from_kafka({
        "log.dirs": str(tmp_path / "data"), "listeners": "127.0.0.1:0",
        "log.flush.interval.messages": "1", "group.initial.rebalance.delay.ms": "0"})
    st = ServerThread(cfg).start()
    try:
        topic = unique("flushed")
        host, port = st.address
        with WireClient(f"{host}:{port}") as c:
            c.create_topic(topic, 1)
            assert st.server.broker.append_may_fsync(topic, 0)
            del fsync_threads[:]
            for i in range(5):
                p = c.produce(topic, 0, batch([b"v%d" % i]), acks=1)
                assert (p.error_code, p.base_offset) == (0, i)
            produce_fsyncs = len(fsync_threads)
            c.commit(unique("g"), {(topic, 0): 5})
            loop = _loop_thread_name(st)
        assert produce_fsyncs >= 5, "flush.messages=1 must fsync on every append"
        assert len(fsync_threads) > produce_fsyncs, "the commit must have fsynced the offsets topic"
        assert loop not in fsync_threads, fsync_threads
    finally:
        st.stop()


def test_without_a_flush_policy_no_append_fsyncs_not_even_a_new_epochs_first(inproc, fsync_threads):
    topic = unique("unflushed")
    inproc.server.broker.create_topic(topic, 1)
    broker = inproc.server.broker
    assert not broker.append_may_fsync(topic, 0), "a new epoch's checkpoint is written without fsync"
    assert not broker.append_may_fsync(unique("no-such-topic"), 0)
    assert not broker.append_may_fsync(topic, 1) and not broker.append_may_fsync(topic, -1)
    host, port = inproc.address
    with WireClient(f"{host}:{port}") as c:
        del fsync_threads[:]
        assert c.produce(topic, 0, batch([b"first"]), acks=1).error_code == 0
        for i in range(3):
            assert c.produce(topic, 0, batch([b"x"]), acks=1).error_code == 0
    assert fsync_threads == []


class _LingeringExecutor:
    """An executor whose worker keeps the submitted callable until told to let go: the
    stretch in which ThreadPoolExecutor's worker still holds its work item after the
    future's result has reached the loop, held open so the test does not race it."""

    def __init__(self) -> None:
        self.let_go = threading.Event()
        self.threads: list[threading.Thread] = []

    def submit(self, fn, *args):
        import concurrent.futures

        fut: concurrent.futures.Future = concurrent.futures.Future()
        work = [fn, args]

        def worker():
            fut.set_result(work[0](*work[1]))
            self.let_go.wait(30)
            work.clear()

        t = threading.Thread(target=worker)
        self.threads.append(t)
        t.start()
        return fut

    def shutdown(self, wait=True, **_):
        self.let_go.set()
        for t in self.threads:
            t.join()


def test_off_loop_call_drops_its_arguments_before_the_answer(tmp_path):
    """A request handed to the I/O pool must not outlive its answer there: its records
    are a view of the connection's frame buffer, which the next large frame reuses only
    when nothing else holds it (tests/server/test_framing.py)."""
    import asyncio
    import weakref

    class Request:
        pass

    with ServerThread(ServerConfig(log_dirs=str(tmp_path / "data"), listeners="127.0.0.1:0")) as st:
        server = st.server
        pool = _LingeringExecutor()
        real, server._executor = server._executor, pool
        try:
            async def call():
                req = Request()
                ref = weakref.ref(req)
                fut = server.call_off_loop(lambda r: "answer", req)
                del req
                assert await fut == "answer"
                return ref

            ref = asyncio.run_coroutine_threadsafe(call(), st.loop).result(30)
            assert not pool.let_go.is_set()   # the worker still holds its callable
            assert ref() is None
        finally:
            server._executor = real
            pool.shutdown()
