"""``pylog serve`` over a data directory whose small files were damaged while it was
stopped: it recovers with a WARN on stderr and serves every acknowledged record, or
refuses to start with one line and a non-zero exit status; never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pylog
from pylog import _core
from pylog.records import RecordBatchBuilder
from tests.wire import WireClient
from tests.server.util import unique


def _batch(i: int) -> bytes:
    b = RecordBatchBuilder()
    for j in range(5):
        b.append(None, None, b"r%d-%d" % (i, j))
    return b.build()


def _fetch_all(c: WireClient, topic: str) -> list[bytes]:
    out, offset = [], 0
    while True:
        res = c.fetch(topic, 0, offset)
        assert res.error_code == 0
        if not res.records:
            return out
        for b in _core.iter_batches(res.records):        # CRC-checked
            out.extend(r.value for r in b if r.offset >= offset)
            offset = b.base_offset + b.last_offset_delta + 1


def _filled(serve):
    server = serve()
    topic = unique("dmg")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 1)
        for i in range(20):
            assert c.produce(topic, 0, _batch(i)).error_code == 0
    expected = [b"r%d-%d" % (i, j) for i in range(20) for j in range(5)]
    assert server.stop() == 0
    return server, topic, expected


def _run_serve(data_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylog.cli", "serve", "--data-dir", data_dir,
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["recovery-point-offset-checkpoint", "log-start-offset-checkpoint"])
def test_non_utf8_checkpoint_is_recovered_with_a_warning(serve, name):
    server, topic, expected = _filled(serve)
    with open(os.path.join(server.data_dir, name), "wb") as f:
        f.write(b"\xff\xfe\x80\xc3 not a checkpoint\n")
    server.start()
    server.wait_for_log(rf"WARNING pylog\.storage: .*{name}: .*not UTF-8")
    with WireClient(server.bootstrap) as c:
        assert _fetch_all(c, topic) == expected
        assert c.produce(topic, 0, _batch(99)).base_offset == 100
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("name, damage", [("meta.properties", b"\xff\xfe\x80"),
                                          ("topic-metadata.json", b"{\"version\": 1, \"topics\": ")])
def test_damaged_identity_files_refuse_to_start_in_one_line(serve, name, damage):
    server, topic, expected = _filled(serve)
    with open(os.path.join(server.data_dir, name), "wb") as f:
        f.write(damage)
    proc = _run_serve(server.data_dir)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if name in line and "restore" in line]
    assert len(errors) == 1, proc.stderr


def test_serve_refuses_a_directory_an_embedded_broker_holds(tmp_path):
    d = str(tmp_path / "d")
    with pylog.Broker.open(d, background=False, offsets_topic_num_partitions=1) as b:
        b.create_topic("t")
        proc = _run_serve(d)
        assert proc.returncode == 1
        assert "is in use by another process" in proc.stderr and "Traceback" not in proc.stderr
        assert b.produce("t", 0, _batch(0)).base_offset == 0     # the holder is unharmed
