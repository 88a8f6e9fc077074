"""Server paths that worked without a test: a long poll with ``min_bytes`` > 1, Fetch
records going out through ``os.sendfile``, the ``pylog serve`` defaults (data directory
``./pylog-data``, listener ``127.0.0.1:9092``), ``--advertised-listener``, and tool
options: ``consume --format line --print-headers``, ``groups reset-offsets --to-latest /
--to-offset / --to-datetime``, ``topics list --internal`` and ``groups list --state``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from pylog.protocol import messages as m
from pylog.records import RecordBatchBuilder, iter_batches
from tests.wire import BrokerConnection, GroupMember, WireClient
from server.util import unique, wait_for

F = m.FetchRequest


def batch(values, timestamps=None, key=None):
    b = RecordBatchBuilder()
    for i, v in enumerate(values):
        b.append(None if timestamps is None else timestamps[i], key, v)
    return bytes(b.build())


def values_of(records) -> list[bytes]:
    return [r.value for b in iter_batches(memoryview(bytes(records))) for r in b]


def pylog(*args, stdin=None, check=True, timeout=60, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "pylog.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
    if check:
        assert proc.returncode == 0, f"pylog {' '.join(args)} failed:\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------------------
# Long poll with min_bytes
# --------------------------------------------------------------------------------------


def _send_fetch(conn, topic, offset, min_bytes, max_wait_ms):
    body = F(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=1 << 20,
             isolation_level=0, session_id=0, session_epoch=-1, topics=[F.FetchTopic(topic=topic, partitions=[
                 F.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)])])
    return conn.send_request(1, body)


def _waiting(inproc, topic) -> bool:
    return bool(inproc.server.state.fetch_waiters.by_partition.get((topic, 0)))


def _waiting_after_the_loop_caught_up(inproc, topic) -> bool:
    """Whether a Fetch still waits on the partition, asked on the server's loop after
    everything queued there so far (the append notifications) has run."""
    done = threading.Event()
    result = []

    def ask():
        result.append(_waiting(inproc, topic))
        done.set()

    inproc.loop.call_soon_threadsafe(ask)
    assert done.wait(10), "the server's loop did not run the check"
    return result[0]


def test_min_bytes_fetch_waits_past_a_small_append_until_max_wait(inproc):
    topic = unique("minbytes-small")
    broker = inproc.server.broker
    broker.create_topic(topic, 1)
    with WireClient(inproc.bootstrap) as c:
        conn = c.leader(topic, 0)
        t0 = time.monotonic()
        pending = _send_fetch(conn, topic, 0, min_bytes=5000, max_wait_ms=2000)
        wait_for(lambda: _waiting(inproc, topic), "the fetch to wait", timeout=10)
        broker.append(topic, 0, batch([b"x" * 100]))         # far less than min_bytes
        assert _waiting_after_the_loop_caught_up(inproc, topic)
        p = conn.receive(pending, timeout=30).responses[0].partitions[0]
        waited = time.monotonic() - t0
    # Answered at max_wait, not by the append, and then with what there is.
    assert waited >= 1.5, f"answered after {waited:.2f} s: the small append answered it"
    assert p.error_code == 0 and p.high_watermark == 1
    assert values_of(p.records) == [b"x" * 100]
    assert not _waiting(inproc, topic)


def test_min_bytes_fetch_is_answered_once_appends_reach_min_bytes(inproc):
    topic = unique("minbytes-big")
    broker = inproc.server.broker
    broker.create_topic(topic, 1)
    broker.append(topic, 0, batch([b"before"]))
    with WireClient(inproc.bootstrap) as c:
        conn = c.leader(topic, 0)
        t0 = time.monotonic()
        pending = _send_fetch(conn, topic, 1, min_bytes=5000, max_wait_ms=8000)
        wait_for(lambda: _waiting(inproc, topic), "the fetch to wait", timeout=10)
        broker.append(topic, 0, batch([b"y" * 3000]))        # not enough yet
        assert _waiting_after_the_loop_caught_up(inproc, topic)
        broker.append(topic, 0, batch([b"z" * 3000]))        # now past min_bytes
        p = conn.receive(pending, timeout=30).responses[0].partitions[0]
        waited = time.monotonic() - t0
    assert waited < 4.0, f"answered after {waited:.2f} s: it waited for max_wait (8 s)"
    assert p.error_code == 0 and p.high_watermark == 3
    assert values_of(p.records) == [b"y" * 3000, b"z" * 3000]


# --------------------------------------------------------------------------------------
# Fetch with sendfile
# --------------------------------------------------------------------------------------


def _fetch_counting_sends(inproc, monkeypatch, topic: str, copy: bool) -> tuple[bytes, list, list]:
    """Fetch all of ``topic``-0 over a new (loopback) connection, with the server copying
    records to loopback peers or not; returns the records and the bytes the server's
    thread sent by sendfile and by sendmsg/send."""
    import pylog.server.connection as connection

    monkeypatch.setattr(connection, "COPY_TO_LOOPBACK", copy)
    by_sendfile: list[int] = []
    by_copy: list[int] = []
    real_sendfile = connection.os.sendfile
    real_sendmsg = socket.socket.sendmsg
    real_send = socket.socket.send
    server_thread = inproc._thread

    def sendfile(out_fd, in_fd, offset, count):
        n = real_sendfile(out_fd, in_fd, offset, count)
        if threading.current_thread() is server_thread:
            by_sendfile.append(n)
        return n

    def sendmsg(self, buffers, *args):
        buffers = list(buffers)
        n = real_sendmsg(self, buffers, *args)
        if threading.current_thread() is server_thread:
            by_copy.append(n)
        return n

    def send(self, data, *args):
        n = real_send(self, data, *args)
        if threading.current_thread() is server_thread:
            by_copy.append(n)
        return n

    with WireClient(inproc.bootstrap) as c:
        conn = c.leader(topic, 0)
        monkeypatch.setattr(connection.os, "sendfile", sendfile)
        monkeypatch.setattr(socket.socket, "sendmsg", sendmsg)
        monkeypatch.setattr(socket.socket, "send", send)
        body = F(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=4 << 20, isolation_level=0,
                 session_id=0, session_epoch=-1, topics=[F.FetchTopic(topic=topic, partitions=[
                     F.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=4 << 20)])])
        p = conn.request(1, body).responses[0].partitions[0]
        monkeypatch.undo()
    return bytes(p.records), by_sendfile, by_copy


def _rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_fetched_record_bytes_go_out_through_sendfile(inproc, monkeypatch):
    topic = unique("sendfile")
    broker = inproc.server.broker
    broker.create_topic(topic, 1)
    payload = [os.urandom(10_000) for _ in range(60)]
    for i in range(0, 60, 10):
        broker.append(topic, 0, batch(payload[i:i + 10]))
    records, by_sendfile, by_copy = _fetch_counting_sends(inproc, monkeypatch, topic, copy=False)
    assert values_of(records) == payload
    # Every record byte went through sendfile; only the response header and fields
    # (well under a kilobyte) through sendmsg/send.
    assert sum(by_sendfile) == len(records) > 600_000
    assert 0 < sum(by_copy) < 1024, by_copy


def test_fetched_record_bytes_go_to_a_loopback_peer_from_the_mapping_and_leave_no_pages_mapped(
        inproc, monkeypatch):
    """With PYLOG_FETCH_COPY_LOOPBACK, records go to a loopback peer with sendmsg from the
    segment's mapping (with the rest of the answer), and the mapped pages they touched
    are let go afterwards: the process's file-backed resident set does not grow by what
    it sent."""
    import pylog.server.connection as connection

    monkeypatch.setattr(connection, "COPY_TO_LOOPBACK", True)
    topic = unique("mapped")
    broker = inproc.server.broker
    broker.create_topic(topic, 1)
    payload = [os.urandom(100_000) for _ in range(300)]        # 30 MB
    for i in range(0, 300, 10):
        broker.append(topic, 0, batch(payload[i:i + 10]))
    got: list[bytes] = []
    rss_before = _rss_file_kb()
    with WireClient(inproc.bootstrap) as c:
        conn = c.leader(topic, 0)
        offset = 0
        while offset < 300:
            body = F(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=4 << 20, isolation_level=0,
                     session_id=0, session_epoch=-1, topics=[F.FetchTopic(topic=topic, partitions=[
                         F.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=4 << 20)])])
            part = conn.request(1, body).responses[0].partitions[0]
            got += values_of(bytes(part.records))
            offset = len(got)
    assert got == payload
    grown_mb = (_rss_file_kb() - rss_before) / 1024
    assert grown_mb < 8, f"{grown_mb:.1f} MB of the 30 MB sent stayed mapped"
    records, by_sendfile, by_copy = _fetch_counting_sends(inproc, monkeypatch, topic, copy=True)
    assert values_of(records) == payload[:len(values_of(records))] and len(records) > 3_000_000
    assert by_sendfile == []
    assert sum(by_copy) > len(records)
    assert len(by_copy) <= 2 + len(records) // 65536     # one sendmsg, or one per socket-full


# --------------------------------------------------------------------------------------
# pylog serve: defaults and --advertised-listener
# --------------------------------------------------------------------------------------


def test_serve_defaults_are_pylog_data_and_port_9092(monkeypatch):
    """``pylog serve`` with no options: listener 127.0.0.1:9092, data in ./pylog-data,
    advertised as the listen address, log level INFO (nothing is bound: the server's
    run() is replaced by one that records the config it gets)."""
    import pylog.cli
    import pylog.server.server as server_mod
    from pylog.server.config import ServerConfig, parse_listener

    got = {}

    def run(config, *, ready=None):
        got["config"] = config
        return 0

    def configure_logging(level):
        got["level"] = level

    monkeypatch.setattr(server_mod, "run", run)
    monkeypatch.setattr(server_mod, "configure_logging", configure_logging)
    assert pylog.cli.main(["serve"]) == 0
    config = got["config"]
    assert got["level"] == "INFO"
    assert config.listeners == "127.0.0.1:9092" and parse_listener(config.listeners) == ("127.0.0.1", 9092)
    assert config.log_dirs == "./pylog-data"
    assert config.advertised_listeners is None
    assert config == ServerConfig()
    # The flags land where they say.
    got.clear()
    assert pylog.cli.main(["serve", "--data-dir", "/nonexistent/d", "--listen", "127.0.0.1:0",
                           "--advertised-listener", "h.invalid:1"]) == 0
    c = got["config"]
    assert (c.log_dirs, c.listeners, c.advertised_listeners) == ("/nonexistent/d", "127.0.0.1:0", "h.invalid:1")


def test_configure_logging_again_follows_the_current_stderr(monkeypatch):
    """A program that runs the CLI in-process twice, with stderr replaced (and the first
    one closed) in between: the second run's lines reach the second stderr, and nothing
    writes to the closed one ("--- Logging error ---" with a traceback)."""
    import io
    import logging

    from pylog.server.server import configure_logging

    logger = logging.getLogger("pylog")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    first, second = io.StringIO(), io.StringIO()
    try:
        logger.handlers[:] = [h for h in logger.handlers if not getattr(h, "_pylog", False)]
        monkeypatch.setattr(sys, "stderr", first)
        configure_logging("DEBUG")
        logging.getLogger("pylog.test").debug("one")
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        configure_logging("DEBUG")
        logging.getLogger("pylog.test").debug("two")
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    assert "two" in second.getvalue() and "Logging error" not in second.getvalue()


_LISTENING = re.compile(r"listening on (\S+):(\d+) advertised=(\S+):(\d+)")


def test_serve_without_data_dir_creates_pylog_data_in_its_cwd(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pylog.cli", "serve", "--listen", "127.0.0.1:0"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    listening = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if _LISTENING.search(line):
                listening.set()
        listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(60) and proc.poll() is None, "\n".join(lines)
        mo = next(_LISTENING.search(x) for x in lines if _LISTENING.search(x))
        port = int(mo.group(2))
        assert mo.group(1) == "127.0.0.1" and (mo.group(3), int(mo.group(4))) == ("127.0.0.1", port)
        topic = unique("cwd")
        with BrokerConnection("127.0.0.1", port) as conn:
            T = m.ProduceRequest
            resp = conn.request(0, T(acks=-1, timeout_ms=5000, topic_data=[T.TopicProduceData(
                name=topic, partition_data=[T.PartitionProduceData(index=0, records=batch([b"v"]))])]))
            assert resp.responses[0].partition_responses[0].error_code == 0
        data = tmp_path / "pylog-data"
        assert data.is_dir()
        assert (data / f"{topic}-0").is_dir()
        assert any("data_dir=./pylog-data" in x for x in lines), "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
        reader.join(5)
        proc.stderr.close()
    assert code == 0, "\n".join(lines[-30:])
    assert not any("Traceback" in x for x in lines), "\n".join(lines)


def test_advertised_listener_flag_is_what_metadata_returns(serve):
    server = serve(extra_args=["--advertised-listener", "advertised.invalid:19998"])
    server.wait_for_log(r"listening on 127\.0\.0\.1:\d+ advertised=advertised\.invalid:19998")
    group = unique("adv-group")
    # Talk to the bound port only: the advertised name does not resolve.
    with BrokerConnection(server.host, server.port) as conn:
        for version in (0, 1, 12):
            md = conn.request(3, m.MetadataRequest(topics=[] if version == 0 else None), version=version)
            assert [(b.node_id, b.host, b.port) for b in md.brokers] == [(0, "advertised.invalid", 19998)]
        fc = conn.request(10, m.FindCoordinatorRequest(key=group, key_type=0), version=3)
        assert (fc.error_code, fc.host, fc.port) == (0, "advertised.invalid", 19998)
        dc = conn.request(60, m.DescribeClusterRequest())
        assert [(b.host, b.port) for b in dc.brokers] == [("advertised.invalid", 19998)]


# --------------------------------------------------------------------------------------
# Tool options
# --------------------------------------------------------------------------------------


def test_consume_format_line_with_headers(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-line")
    pylog("topics", "create", topic, "--partitions", "1", *b)
    pylog("produce", "--topic", topic, "--key-separator", "=", "--header", "origin=test", "--header", "n=1",
          *b, stdin="k1=v1\nk2=v2\n")
    pylog("produce", "--topic", topic, *b, stdin="bare\n")
    out = pylog("consume", "--topic", topic, "--from-beginning", "--format", "line", "--print-headers",
                "--print-key", "--max-messages", "3", "--timeout-ms", "5000", *b).stdout
    assert out.splitlines() == ["origin:test,n:1\tk1\tv1", "origin:test,n:1\tk2\tv2", "NO_HEADERS\tnull\tbare"]
    out = pylog("consume", "--topic", topic, "--offset", "1", "--format", "line", "--print-headers",
                "--print-offset", "--key-separator", " | ", "--max-messages", "2", "--timeout-ms", "5000",
                *b).stdout
    assert out.splitlines() == ["0:1 | origin:test,n:1 | v2", "0:2 | NO_HEADERS | bare"]


def _reset_rows(out: str) -> dict[int, int]:
    lines = out.splitlines()
    assert lines[0].split("\t") == ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
    return {int(r.split("\t")[2]): int(r.split("\t")[3]) for r in lines[1:]}


def test_groups_reset_offsets_to_latest_offset_and_datetime(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-reset")
    group = unique("cli-reset-g")
    with WireClient(module_server.bootstrap) as c:
        c.create_topic(topic, 2)
        # Partition 0: ten records at 1000, 2000, ..., 10000 ms (one batch each);
        # partition 1: four records at 1500, 2500, 3500, 4500 in one batch.
        for i in range(10):
            assert c.produce(topic, 0, batch([b"p0-%d" % i], [1000 * (i + 1)])).error_code == 0
        assert c.produce(topic, 1, batch([b"p1-%d" % i for i in range(4)],
                                         [1500 + 1000 * i for i in range(4)])).error_code == 0
        c.commit(group, {(topic, 0): 2, (topic, 1): 1})

        def committed():
            return c.committed(group, {topic: [0, 1]})

        out = pylog("groups", "reset-offsets", group, "--topic", topic, "--to-latest", "--execute", *b).stdout
        assert _reset_rows(out) == {0: 10, 1: 4}
        assert committed() == {(topic, 0): 10, (topic, 1): 4}

        # --to-offset, one partition only; out-of-range targets are clamped to the log.
        out = pylog("groups", "reset-offsets", group, "--topic", f"{topic}:0", "--to-offset", "3",
                    "--execute", *b).stdout
        assert _reset_rows(out) == {0: 3}
        assert committed() == {(topic, 0): 3, (topic, 1): 4}
        out = pylog("groups", "reset-offsets", group, "--topic", topic, "--to-offset", "99", "--execute",
                    *b).stdout
        assert _reset_rows(out) == {0: 10, 1: 4}

        # --to-datetime: the first record at or after the time; none: the log end.
        out = pylog("groups", "reset-offsets", group, "--topic", topic, "--to-datetime", "4500",
                    "--execute", *b).stdout
        assert _reset_rows(out) == {0: 4, 1: 3}
        assert committed() == {(topic, 0): 4, (topic, 1): 3}
        out = pylog("groups", "reset-offsets", group, "--topic", topic, "--to-datetime", "0", *b)
        assert _reset_rows(out.stdout) == {0: 0, 1: 0} and "dry run" in out.stderr
        assert committed() == {(topic, 0): 4, (topic, 1): 3}          # a dry run changes nothing
        out = pylog("groups", "reset-offsets", group, "--topic", topic, "--to-datetime", "999999",
                    "--execute", *b).stdout
        assert _reset_rows(out) == {0: 10, 1: 4}
        assert committed() == {(topic, 0): 10, (topic, 1): 4}


def test_topics_list_internal_and_groups_list_state(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-state")
    empty_group = unique("cli-empty")
    stable_group = unique("cli-stable")
    with WireClient(module_server.bootstrap) as c:
        c.create_topic(topic, 1)
        c.commit(empty_group, {(topic, 0): 0})        # creates __consumer_offsets too
        plain = pylog("topics", "list", *b).stdout.split()
        internal = pylog("topics", "list", "--internal", *b).stdout.split()
        assert topic in plain and "__consumer_offsets" not in plain
        assert topic in internal and "__consumer_offsets" in internal
        assert set(internal) - set(plain) == {"__consumer_offsets"}

        member = GroupMember(c, stable_group, [topic], session_timeout_ms=30000)
        try:
            assert member.ensure_active() == {topic: [0]}
            lines = pylog("groups", "list", "--state", *b).stdout.splitlines()
            states = dict(line.split("\t") for line in lines)
            assert states[stable_group] == "Stable"
            assert states[empty_group] == "Empty"
            names = pylog("groups", "list", *b).stdout.splitlines()
            assert stable_group in names and empty_group in names
            assert all("\t" not in x for x in names)
        finally:
            member.leave()
        wait_for(lambda: dict(line.split("\t") for line in pylog("groups", "list", "--state", *b)
                              .stdout.splitlines()).get(stable_group) == "Empty",
                 "the group to be empty after its member left", timeout=20)


def test_which_peers_are_loopback():
    from pylog.server.connection import _is_loopback

    assert all(_is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"))
    assert not any(_is_loopback(h) for h in ("10.0.0.1", "192.168.1.127", "128.0.0.1", "::2", "fe80::1",
                                              "::ffff:10.0.0.1"))


@pytest.mark.parametrize("value, copies", [(None, False), ("0", False), ("1", True)])
def test_loopback_peers_get_sendfile_unless_copying_is_asked_for(value, copies):
    env = {k: v for k, v in os.environ.items() if k != "PYLOG_FETCH_COPY_LOOPBACK"}
    if value is not None:
        env["PYLOG_FETCH_COPY_LOOPBACK"] = value
    out = subprocess.run([sys.executable, "-c", "import pylog.server.connection as c; print(c.COPY_TO_LOOPBACK)"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == str(copies)
