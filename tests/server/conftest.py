"""Fixtures that run ``pylog serve`` for the server tests.

- ``serve``: a factory starting ``pylog serve`` as a subprocess on a free loopback port
  (``--listen 127.0.0.1:0``; the port is read from the "listening on" log line) with a
  temporary data directory and short group timeouts.  Every server started is stopped
  (SIGTERM, then SIGKILL if it hangs) when the test ends, and its exit status checked.
- ``server``: one such server, started with the defaults.
- ``inproc``: an in-process server (:class:`ServerThread`, own thread and loop) on a free
  loopback port, for tests that reach into its broker or connections.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

_LISTENING = re.compile(r"listening on (\S+):(\d+) ")

#: Settings every test server gets: short timeouts so groups settle fast on 2 cores.
TEST_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "offsets.topic.num.partitions": "4",
    "log.flush.scheduler.interval.ms": "200",
}


class ServeProcess:
    """A ``pylog serve`` subprocess."""

    def __init__(self, data_dir: str, overrides: dict[str, str] | None = None,
                 extra_args: list[str] | None = None, port: int = 0) -> None:
        self.data_dir = data_dir
        self.overrides = {**TEST_OVERRIDES, **(overrides or {})}
        self.extra_args = list(extra_args or [])
        self.port = port
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None
        self.returncode: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServeProcess":
        cmd = [sys.executable, "-m", "pylog.cli", "serve", "--data-dir", self.data_dir,
               "--listen", f"127.0.0.1:{self.port}"]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        cmd += self.extra_args
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                mo = _LISTENING.search(line)
                if mo and not found.is_set():
                    self.port = int(mo.group(2))
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("pylog serve did not start:\n" + "\n".join(self.lines[-30:]))
        if self.proc.poll() is not None and not any(_LISTENING.search(x) for x in self.lines):
            raise RuntimeError("pylog serve exited at start:\n" + "\n".join(self.lines[-30:]))
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait(10)
            raise AssertionError("pylog serve did not stop on SIGTERM within "
                                 f"{timeout} s:\n" + "\n".join(self.lines[-30:])) from None
        finally:
            self._release()
        return self.returncode

    def _release(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL (a crash, for restart tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.returncode = self.proc.wait(10)
        self._release()

    def restart(self, timeout: float = 60.0) -> "ServeProcess":
        """Stop cleanly and start again on the same data directory and port."""
        assert self.stop() == 0, "\n".join(self.lines[-30:])
        return self.start(timeout)

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if rx.search(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines[-30:]))


@pytest.fixture
def serve(tmp_path):
    started: list[ServeProcess] = []
    counter = iter(range(1000))

    def factory(overrides: dict[str, str] | None = None, extra_args: list[str] | None = None,
                data_dir: str | None = None) -> ServeProcess:
        d = data_dir or str(tmp_path / f"data{next(counter)}")
        sp = ServeProcess(d, overrides, extra_args)
        started.append(sp)
        return sp.start()

    yield factory
    failures = []
    for sp in started:
        if sp.proc is not None:
            code = sp.stop()
            if code != 0:
                failures.append(f"pylog serve exited with {code}:\n" + "\n".join(sp.lines[-30:]))
    for sp in started:
        crashes = [x for x in sp.lines if "Traceback" in x]
        if crashes:
            failures.append("pylog serve logged a traceback:\n" + sp.log_text()[-5000:])
    if failures:
        pytest.fail("\n\n".join(failures))


@pytest.fixture
def server(serve):
    return serve()


@pytest.fixture
def inproc(tmp_path, monkeypatch):
    from pylog.server.config import ServerConfig
    from pylog.server.server import EVENT_LOOP_ENV, ServerThread

    # In-process servers run asyncio's own loop, the `pylog serve` subprocesses uvloop's
    # (installed by the test set-up), so the suite runs the server on both.
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    st = ServerThread(ServerConfig(log_dirs=str(tmp_path / "data"), listeners="127.0.0.1:0"))
    st.start()
    try:
        yield st
    finally:
        st.stop()


def _check_stopped(sp: ServeProcess) -> None:
    code = sp.stop()
    assert code == 0, f"pylog serve exited with {code}:\n" + sp.log_text()[-3000:]
    assert "Traceback" not in sp.log_text(), "pylog serve logged a traceback:\n" + sp.log_text()[-5000:]


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """One ``pylog serve`` shared by the tests of a module (each uses its own topics)."""
    sp = ServeProcess(str(tmp_path_factory.mktemp("serve")))
    sp.start()
    try:
        yield sp
    finally:
        _check_stopped(sp)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
