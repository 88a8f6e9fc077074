"""The server's event loop thread asks Linux for a short scheduler slice
(:mod:`pylog.server.sched`): by default 100 µs, ``PYLOG_LOOP_SLICE_US`` sets another,
0 leaves the kernel's."""

from __future__ import annotations

import threading

import pytest

from pylog.server import sched
from pylog.server.config import ServerConfig
from pylog.server.server import EVENT_LOOP_ENV, ServerThread


def _custom_slices_supported() -> bool:
    """Whether this kernel keeps a thread's custom slice (Linux 6.12+), tried on a
    thread of its own."""
    got: list = []

    def probe() -> None:
        got.append(sched.set_slice(250) and sched.slice_ns() == 250_000)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return bool(got[0])


pytestmark = pytest.mark.skipif(not _custom_slices_supported(),
                                reason="no custom scheduler slices (Linux 6.12+ on x86-64 or arm64)")


def _loop_thread_slice(tmp_path, monkeypatch, env: str | None) -> int | None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    if env is None:
        monkeypatch.delenv(sched.LOOP_SLICE_ENV, raising=False)
    else:
        monkeypatch.setenv(sched.LOOP_SLICE_ENV, env)
    st = ServerThread(ServerConfig(log_dirs=str(tmp_path / "data"), listeners="127.0.0.1:0"))
    st.start()
    try:
        assert st._thread is not None
        return sched.slice_ns(st._thread.native_id)
    finally:
        st.stop()


def test_the_loop_thread_runs_with_a_100_us_slice_by_default(tmp_path, monkeypatch):
    assert _loop_thread_slice(tmp_path, monkeypatch, None) == 100_000


def test_the_slice_is_set_by_the_environment(tmp_path, monkeypatch):
    assert _loop_thread_slice(tmp_path, monkeypatch, "300") == 300_000


def test_zero_leaves_the_kernels_slice(tmp_path, monkeypatch):
    default: list = []
    t = threading.Thread(target=lambda: default.append(sched.slice_ns()))
    t.start()
    t.join()
    assert _loop_thread_slice(tmp_path, monkeypatch, "0") == default[0]
