"""The event loop thread's scheduler time slice (Linux 6.12+, EEVDF).

A server's loop thread sleeps in ``epoll_wait`` and runs for well under a millisecond
per request.  When it wakes on a CPU a CPU-bound process holds, Linux's EEVDF scheduler
lets that process finish its protected slice first (``sched_base_slice``, 0.7 ms times
1 + log2(CPUs): 1.4 ms on 2 CPUs, more on bigger machines) unless the woken thread asks
for a shorter slice of its own.  A thread may do that, unprivileged, with
``sched_setattr``'s ``sched_runtime`` under ``SCHED_OTHER`` (Linux 6.12's custom slice;
older kernels ignore the field): it is then preferred at wake-up and preempts the
CPU-bound neighbour within about that slice.  Its share of the CPU does not change (its
weight, i.e. its nice value, is untouched); only how soon it runs once runnable and how
long it runs at a stretch when others wait.

Measured at 10,000 records/s (confluent producer -> ``pylog serve`` -> confluent
consumer) with a CPU-bound process beside it on a 2-CPU machine (other load 3-6): the
loop thread's wake-up delay at p99 went from 0.11-1.06 ms to 0.06-0.09 ms (``perf
sched``, three paired 10 s runs); one confluent producer's throughput, with no
neighbour, went from 0.98-1.11M to 1.21-1.36M records/s (four alternating runs, #17).
The server sets it just after it listens (the slice matters for serving, and
:mod:`ctypes`, which makes the system calls, is ~1.5 ms of a start-up, #17), on the loop
thread and on the threads its start-up started (the broker's, the I/O pool's); threads
the loop thread starts afterwards inherit it.  They mostly sleep.

:data:`LOOP_SLICE_ENV` (microseconds; ``0`` leaves the kernel's default) sets it;
the default is :data:`DEFAULT_LOOP_SLICE_US`.  Linux on x86-64 and arm64 only: elsewhere
nothing is done.

Thread safety: each function acts on one thread (the calling one by default).
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from typing import Any

__all__ = ["DEFAULT_LOOP_SLICE_US", "LOOP_SLICE_ENV", "loop_slice_us", "set_slice", "slice_ns"]

#: Environment variable: the loop thread's slice in microseconds (0: the kernel's default).
LOOP_SLICE_ENV = "PYLOG_LOOP_SLICE_US"
#: The kernel's smallest custom slice (100 µs): a request's work fits in a few of them.
DEFAULT_LOOP_SLICE_US = 100

# struct sched_attr (SCHED_ATTR_SIZE_VER1): size u32, policy u32, flags u64, nice s32,
# priority u32, runtime u64, deadline u64, period u64, util_min u32, util_max u32.
_ATTR_SIZE = 56
_RUNTIME_AT = 24
_SCHED_OTHER = 0
#: (sched_setattr, sched_getattr) system call numbers by machine.
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}


_log = logging.getLogger("pylog.server")


def loop_slice_us() -> int:
    """The slice :data:`LOOP_SLICE_ENV` asks for (µs; 0: the kernel's default).  A value
    that is not a whole number >= 0 is logged as a WARNING and the default is used."""
    text = os.environ.get(LOOP_SLICE_ENV, "").strip()
    if not text:
        return DEFAULT_LOOP_SLICE_US
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        _log.warning("%s=%r is not a whole number of microseconds >= 0: the event loop thread "
                     "uses the default slice of %d µs", LOOP_SLICE_ENV, text, DEFAULT_LOOP_SLICE_US)
        return DEFAULT_LOOP_SLICE_US
    return value


def _calls() -> tuple[int, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return _SYSCALLS.get(os.uname().machine)


_libc: Any = None


def _syscall(number: int, *args: object) -> int:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall(number, *args)


def _get_attr(tid: int) -> bytearray | None:
    calls = _calls()
    if calls is None:
        return None
    import ctypes

    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    if _syscall(calls[1], ctypes.c_int(tid), buf, ctypes.c_uint(_ATTR_SIZE), ctypes.c_uint(0)) != 0:
        return None
    return bytearray(buf.raw)


def slice_ns(tid: int = 0) -> int | None:
    """The custom slice of thread ``tid`` (0: the calling thread) in ns, as
    ``sched_getattr`` reports it (the kernel's default slice when none was set); None
    where it cannot be read."""
    attr = _get_attr(tid)
    return None if attr is None else struct.unpack_from("<Q", attr, _RUNTIME_AT)[0]


def set_slice(us: int, tid: int = 0) -> bool:
    """Ask for a slice of ``us`` microseconds for thread ``tid`` (0: the calling thread),
    if it runs under ``SCHED_OTHER`` (a real-time or batch thread is left as it is).
    Its policy, nice value and every other attribute are kept.  Returns whether the
    kernel took it."""
    attr = _get_attr(tid)
    if attr is None or struct.unpack_from("<I", attr, 4)[0] != _SCHED_OTHER:
        return False
    calls = _calls()
    assert calls is not None
    import ctypes

    struct.pack_into("<I", attr, 0, _ATTR_SIZE)
    struct.pack_into("<Q", attr, _RUNTIME_AT, us * 1000)
    buf = ctypes.create_string_buffer(bytes(attr), _ATTR_SIZE)
    return _syscall(calls[0], ctypes.c_int(tid), buf, ctypes.c_uint(0)) == 0
