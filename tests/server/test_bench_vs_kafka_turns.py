"""benches/bench_vs_kafka.py and ``pylog bench --compare-kafka`` run one server at a
time: while one is measured, every thread of the other runs at SCHED_IDLE (take_turn),
and the measured one at the bench's own policy again, threads started while it was idle
included."""

import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from pylog.server.kafka_peer import take_turn  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE") or os.geteuid() != 0,
                                reason="needs Linux scheduling policies and root (to raise a thread back)")

# A child with a second thread; it starts a third when told to (a line on stdin), and
# says "ready" each time its threads are there.
_CHILD = """
import sys, threading
ev = threading.Event()
threading.Thread(target=ev.wait, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
threading.Thread(target=ev.wait, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
"""


class _Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def new_thread(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ready"

    def policies(self) -> set[int]:
        return {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{self.proc.pid}/task")}

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def test_the_idle_server_runs_at_sched_idle_and_gets_its_policy_back():
    own = os.sched_getscheduler(0)
    a, b = _Child(), _Child()
    try:
        servers = {"pylog": a, "kafka": b}
        assert take_turn(servers, "pylog")
        assert a.policies() == {own} and b.policies() == {os.SCHED_IDLE}
        b.new_thread()                     # started while idle: idle too
        assert b.policies() == {os.SCHED_IDLE} and len(os.listdir(f"/proc/{b.proc.pid}/task")) == 3
        assert take_turn(servers, "kafka")
        assert a.policies() == {os.SCHED_IDLE} and b.policies() == {own}
        b.proc.kill()
        b.proc.wait()
        assert take_turn(servers, "pylog")  # a server that exited is left alone
        assert a.policies() == {own}
    finally:
        a.close()
        b.close()
