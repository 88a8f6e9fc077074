"""kcat (librdkafka's command-line client) against ``pylog serve``: -L, -P, -C with -o
offsets, and -G balanced consumer groups."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading

import pytest

from server.util import unique, wait_for

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (ci/test.sh installs it)")

OPTS = ["-X", "socket.timeout.ms=10000", "-X", "topic.metadata.refresh.interval.ms=1000"]


def kcat(bootstrap, *args, stdin=None, timeout=30):
    proc = subprocess.run([KCAT, "-b", bootstrap, *OPTS, *args], input=stdin, capture_output=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def test_metadata_list(module_server):
    topic = unique("kc-meta")
    kcat(module_server.bootstrap, "-P", "-t", topic, stdin=b"x\n")
    out = kcat(module_server.bootstrap, "-L")
    assert f"broker 0 at {module_server.host}:{module_server.port}" in out
    assert f'topic "{topic}" with 1 partitions' in out
    out = kcat(module_server.bootstrap, "-L", "-t", topic, "-J")
    assert f'"topic":"{topic}"' in out.replace(" ", "")


def test_produce_and_consume_with_offsets(module_server):
    b = module_server.bootstrap
    topic = unique("kc")
    lines = [f"line-{i}" for i in range(20)]
    kcat(b, "-P", "-t", topic, "-K", ":", stdin="".join(f"k{i % 3}:{v}\n" for i, v in enumerate(lines)).encode())
    out = kcat(b, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%o %k %s\n")
    rows = [r.split(" ") for r in out.strip().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(20))
    assert [r[2] for r in rows] == lines
    assert [r[1] for r in rows] == [f"k{i % 3}" for i in range(20)]
    # Absolute offset (inside a batch: kcat gets the whole batch and skips to the offset).
    out = kcat(b, "-C", "-t", topic, "-o", "13", "-e", "-f", "%o\n")
    assert out.split() == [str(i) for i in range(13, 20)]
    # Relative to the end.
    out = kcat(b, "-C", "-t", topic, "-o", "-4", "-e", "-f", "%s\n")
    assert out.split() == lines[-4:]
    # -c count.
    out = kcat(b, "-C", "-t", topic, "-o", "beginning", "-c", "5", "-f", "%s\n")
    assert out.split() == lines[:5]
    # From the end: nothing, then exit at the end.
    assert kcat(b, "-C", "-t", topic, "-o", "end", "-e") == ""


def test_consume_by_timestamp(module_server):
    b = module_server.bootstrap
    topic = unique("kc-ts")
    stdin = "".join(f"v{i}\n" for i in range(10)).encode()
    kcat(b, "-P", "-t", topic, stdin=stdin)
    out = kcat(b, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%T\n")
    stamps = [int(x) for x in out.split()]
    assert len(stamps) == 10
    out = kcat(b, "-C", "-t", topic, "-o", f"s@{stamps[0]}", "-e", "-f", "%s\n")
    assert out.split()[0] == "v0"


def test_balanced_consumer_group(module_server):
    b = module_server.bootstrap
    topic = unique("kc-group")
    group = unique("kc-g")
    out = kcat(b, "-P", "-t", topic, stdin=b"a\nb\nc\n")
    assert out == ""
    # -u: unbuffered output, so each record reaches the pipe as it is consumed.
    proc = subprocess.Popen([KCAT, "-b", b, *OPTS, "-u", "-X", "auto.offset.reset=earliest",
                             "-G", group, topic, "-f", "%s\n"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[bytes] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 3, "kcat -G to consume three records", timeout=30)
        assert sorted(lines) == [b"a", b"b", b"c"]
    finally:
        proc.send_signal(signal.SIGINT)   # kcat commits and leaves the group on SIGINT
        try:
            proc.wait(20)
        finally:
            reader.join(5)
            proc.stdout.close()
            proc.stderr.close()
    # The group is known to the server and committed its position.
    from tests.wire import WireClient

    with WireClient(b) as c:
        assert group in {g.group_id for g in c.list_groups()}
        committed = wait_for(lambda: c.committed(group, {topic: [0]}).get((topic, 0), -1) == 3 or None,
                             "the group's commit", timeout=10)
        assert committed
