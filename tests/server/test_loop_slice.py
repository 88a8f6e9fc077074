"""The server's event loop thread asks Linux for a short scheduler slice
(:mod:`pylog.server.sched`): by default 100 µs, ``PYLOG_LOOP_SLICE_US`` sets another,
0 leaves the kernel's; the threads the server's start-up started get it too.  A value
that is not a whole number is logged as a WARNING and the default used."""

from __future__ import annotations

import logging
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


needs_slices = pytest.mark.skipif(not _custom_slices_supported(),
                                  reason="no custom scheduler slices (Linux 6.12+ on x86-64 or arm64)")


def _thread_slices(tmp_path, monkeypatch, env: str | None) -> dict[str, int | None]:
    """The slices of the loop thread (``"loop"``) and of the server's other threads
    (by name), read once the server has started."""
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    if env is None:
        monkeypatch.delenv(sched.LOOP_SLICE_ENV, raising=False)
    else:
        monkeypatch.setenv(sched.LOOP_SLICE_ENV, env)
    # Threads of this process that the server did not start (a process-wide one such as
    # the log flusher, started by an earlier test) are not the server's to set.
    before = {t.ident for t in threading.enumerate()}
    st = ServerThread(ServerConfig(log_dirs=str(tmp_path / "data"), listeners="127.0.0.1:0"))
    st.start()
    try:
        assert st._thread is not None
        slices = {t.name: sched.slice_ns(t.native_id) for t in threading.enumerate()
                  if t.name.startswith("pylog-") and t is not st._thread and t.native_id
                  and t.ident not in before}
        slices["loop"] = sched.slice_ns(st._thread.native_id)
        return slices
    finally:
        st.stop()


def _loop_thread_slice(tmp_path, monkeypatch, env: str | None) -> int | None:
    return _thread_slices(tmp_path, monkeypatch, env)["loop"]


@needs_slices
def test_the_loop_thread_runs_with_a_100_us_slice_by_default(tmp_path, monkeypatch):
    assert _loop_thread_slice(tmp_path, monkeypatch, None) == 100_000


@needs_slices
def test_the_threads_the_start_up_started_get_the_slice_too(tmp_path, monkeypatch):
    slices = _thread_slices(tmp_path, monkeypatch, "300")
    # The I/O pool opened the broker; the broker runs its background thread.
    assert any(name.startswith("pylog-io") for name in slices), slices
    assert any(name.startswith("pylog-broker-") for name in slices), slices
    assert set(slices.values()) == {300_000}, slices


@needs_slices
def test_the_slice_is_set_by_the_environment(tmp_path, monkeypatch):
    assert _loop_thread_slice(tmp_path, monkeypatch, "300") == 300_000


@pytest.mark.parametrize("value", ["1.5", "fast", "-3"])
def test_a_value_that_is_not_a_whole_number_is_logged_and_the_default_used(monkeypatch, caplog, value):
    monkeypatch.setenv(sched.LOOP_SLICE_ENV, value)
    with caplog.at_level(logging.WARNING, logger="pylog.server"):
        assert sched.loop_slice_us() == sched.DEFAULT_LOOP_SLICE_US
    [record] = [r for r in caplog.records if r.name == "pylog.server"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert f"{sched.LOOP_SLICE_ENV}={value!r}" in message
    assert f"default slice of {sched.DEFAULT_LOOP_SLICE_US} µs" in message


def test_whole_numbers_are_taken_without_a_warning(monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="pylog.server"):
        for text, want in ((" 250 ", 250), ("0", 0), ("", sched.DEFAULT_LOOP_SLICE_US)):
            monkeypatch.setenv(sched.LOOP_SLICE_ENV, text)
            assert sched.loop_slice_us() == want
    assert not [r for r in caplog.records if r.name == "pylog.server"]


@needs_slices
def test_zero_leaves_the_kernels_slice(tmp_path, monkeypatch):
    default: list = []
    t = threading.Thread(target=lambda: default.append(sched.slice_ns()))
    t.start()
    t.join()
    assert _loop_thread_slice(tmp_path, monkeypatch, "0") == default[0]
