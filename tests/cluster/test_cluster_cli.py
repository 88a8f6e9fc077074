"""``pylog cluster up`` starts brokers on loopback and stops them on SIGTERM;
``pylog cluster status`` shows the brokers, the controller and the partitions that are
under-replicated or offline."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from server.util import wait_for


def status(bootstrap: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylog.cli", "cluster", "status", "--bootstrap-server", bootstrap],
                          capture_output=True, text=True, timeout=60)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylog.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("zookeeper", ["given", pytest.param("started", marks=pytest.mark.long)])
def test_cluster_up_status_and_stop(tmp_path, zk_connect, zookeeper):
    args = [sys.executable, "-m", "pylog.cli", "cluster", "up", "--brokers", "3", "--data-dir", str(tmp_path),
            "--override", "zookeeper.session.timeout.ms=3000"]
    if zookeeper == "given":
        args += ["--zookeeper", zk_connect]
    up = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in up.stdout:
            lines.append(line)
            if line.startswith("bootstrap: "):
                break
        assert lines and lines[-1].startswith("bootstrap: "), (lines, up.stderr.read())
        bootstrap = lines[-1].split()[1]
        assert len(bootstrap.split(",")) == 3
        got = wait_for(lambda: (lambda r: r if r.stdout.count("\nbroker ") == 3 else None)(status(bootstrap)),
                       "3 brokers in the cluster status")
        assert "controller: " in got.stdout and "controller: -1" not in got.stdout, got.stdout
        created = run_cli("topics", "create", "--bootstrap-server", bootstrap, "t",
                          "--partitions", "2", "--replication-factor", "3")
        assert created.returncode == 0, created.stderr
        first = bootstrap.split(",")[0]
        pid = int(next(line.split("pid ")[1].split(",")[0] for line in lines if line.startswith("broker 1:")))
        # A follower (or leader) gone: its partitions are under-replicated once the ISR
        # shrinks (SIGKILL: ZooKeeper expires its session).
        import os
        os.kill(pid, signal.SIGKILL)
        rest = ",".join(bootstrap.split(",")[1:])
        got = wait_for(lambda: (lambda r: r if "under-replicated partitions: 2" in r.stdout else None)(status(rest)),
                       "two under-replicated partitions", timeout=60)
        assert "offline partitions: 0" in got.stdout and got.returncode == 0
        assert first not in got.stdout
    finally:
        up.send_signal(signal.SIGTERM)
        out, err = up.communicate(timeout=120)
    assert up.returncode == 0, err
    assert "stopping" in out
