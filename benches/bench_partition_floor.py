"""The floor under issue #17's partition figure: what 1000 partitions cost the kernel, and
what they cost Apache Kafka, beside ``pylog serve`` in the same run.

``benches/bench_scale.py`` (``ProduceReplay``) measures the server's CPU per MB produced
with 1000 partitions against one.  Two peers say how far that ratio can go down:

- ``StorageFloor.track_*``: no server and no Python in the loop, only the kernel's part:
  a C loop (compiled here with the system's C compiler, called once through ctypes)
  appends the same bytes round-robin over 1000 preallocated files, and the same appends
  to one file, in appends of the replay's size (a 8,843-byte Produce batch) and of 1000
  bytes; each both with ``pwritev`` (a batch header and its rest, as pylog writes) and
  with a ``memcpy`` into a shared mapping of the file (pylog's path under 1.5 KiB).  One
  file in appends of the one-partition replay's size (990,852 bytes) is the figure
  those are compared with.  CPU is the thread's own (``CLOCK_THREAD_CPUTIME_ID``, in ns),
  with its system share from ``getrusage(RUSAGE_THREAD)``.
- ``KafkaReplay.track_*``: the replay of ``bench_scale`` (pipelined Produce v9 requests of
  one batch each, ~900 KB to one partition against ~8.8 KB over 1000) against Apache
  Kafka 4 (the jars of tests/kafka_ref, run as ``kafka-server-start.sh`` runs them) and
  against ``pylog serve``, alternating, and the same with one confluent-kafka producer
  (100-byte records round-robin over the partitions): each server's CPU ms per MB and its
  1000-to-1 ratio.  Both servers are warmed first (every partition written once, and the
  JVM's compiler given a pass of each workload).

``python -m benches.bench_partition_floor [rounds]`` prints every figure (medians).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time

_C_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>

/* Append `count` appends of `size` bytes of `src`, round-robin over `nfiles` files:
   mode 0 with pwritev (two iovecs: a 61-byte batch header and the rest), mode 1 with a
   memcpy into maps[f].  pos[f] is each file's next position, advanced.  out[0]: thread
   CPU ns; out[1], out[2]: user and system microseconds.  Returns 0 or an errno. */
int floor_run(int mode, int nfiles, const int *fds, char **maps, int64_t *pos,
              const char *src, int64_t size, int64_t count, int64_t *out)
{
    struct rusage ra, rb;
    struct timespec ta, tb;
    int64_t i;
    getrusage(RUSAGE_THREAD, &ra);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ta);
    for (i = 0; i < count; i++) {
        int f = (int)(i % nfiles);
        if (mode == 0) {
            struct iovec iov[2];
            iov[0].iov_base = (void *)src; iov[0].iov_len = 61;
            iov[1].iov_base = (void *)(src + 61); iov[1].iov_len = (size_t)(size - 61);
            ssize_t n = pwritev(fds[f], iov, 2, pos[f]);
            if (n != size) return n < 0 ? errno : EIO;
        } else {
            memcpy(maps[f] + pos[f], src, (size_t)size);
        }
        pos[f] += size;
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &tb);
    getrusage(RUSAGE_THREAD, &rb);
    out[0] = (int64_t)(tb.tv_sec - ta.tv_sec) * 1000000000 + (tb.tv_nsec - ta.tv_nsec);
    out[1] = (int64_t)(rb.ru_utime.tv_sec - ra.ru_utime.tv_sec) * 1000000 + (rb.ru_utime.tv_usec - ra.ru_utime.tv_usec);
    out[2] = (int64_t)(rb.ru_stime.tv_sec - ra.ru_stime.tv_sec) * 1000000 + (rb.ru_stime.tv_usec - ra.ru_stime.tv_usec);
    return 0;
}
"""

_lib = None

#: Batch sizes of the replay (benches/bench_scale.py produce_replay): 80 and 9000 records
#: of 100 bytes (8,797 and 990,805 bytes, in Produce requests of 8,843 and 990,852).
WIDE_APPEND = 8797
ONE_APPEND = 990_805


def _floor_lib() -> ctypes.CDLL:
    """The C loop above, compiled once per process into a temporary directory."""
    global _lib
    if _lib is None:
        tmp = tempfile.mkdtemp(prefix="pylog-bench-floor-c-")
        src, so = os.path.join(tmp, "floor.c"), os.path.join(tmp, "floor.so")
        with open(src, "w") as f:
            f.write(_C_SOURCE)
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", so, src], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lib = ctypes.CDLL(so)
        lib.floor_run.restype = ctypes.c_int
        lib.floor_run.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                  ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int64),
                                  ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.POINTER(ctypes.c_int64)]
        _lib = lib
    return _lib


def storage_append(mode: str, files: int, append_bytes: int, megabytes: float = 100.0) -> dict:
    """CPU ms per MB of appending ``megabytes`` in appends of ``append_bytes``,
    round-robin over ``files`` fresh files preallocated (``posix_fallocate``) to what
    each receives, as pylog allocates segment blocks ahead of the writer.  ``mode``:
    "pwritev" or "mmap" (a memcpy into a shared mapping of each whole file)."""
    lib = _floor_lib()
    count = max(int(megabytes * 1e6 / append_bytes), files)
    per_file = -(-count // files) * append_bytes
    src = os.urandom(append_bytes)
    with tempfile.TemporaryDirectory(prefix="pylog-bench-floor-") as tmp:
        fds, maps = [], []
        try:
            for i in range(files):
                fd = os.open(os.path.join(tmp, f"{i:05d}.log"), os.O_RDWR | os.O_CREAT, 0o644)
                fds.append(fd)
                os.posix_fallocate(fd, 0, per_file)
                if mode == "mmap":
                    maps.append(mmap.mmap(fd, per_file))
            fd_arr = (ctypes.c_int * files)(*fds)
            map_arr = (ctypes.c_void_p * files)(
                *[ctypes.addressof(ctypes.c_char.from_buffer(m)) for m in maps] if maps else [])
            pos = (ctypes.c_int64 * files)()
            out = (ctypes.c_int64 * 3)()
            rc = lib.floor_run(0 if mode == "pwritev" else 1, files, fd_arr, map_arr, pos,
                               src, append_bytes, count, out)
            if rc:
                raise OSError(rc, os.strerror(rc))
            del map_arr
        finally:
            for m in maps:
                m.close()
            for fd in fds:
                os.close(fd)
    mb = count * append_bytes / 1e6
    return {"cpu_ms_per_mb": out[0] / 1e6 / mb, "user_ms_per_mb": out[1] / 1e3 / mb,
            "sys_ms_per_mb": out[2] / 1e3 / mb}


#: (name, mode, files, append bytes) of every storage floor case.
STORAGE_CASES = [
    ("pwritev_1_file_one_size", "pwritev", 1, ONE_APPEND),
    ("pwritev_1_file_wide_size", "pwritev", 1, WIDE_APPEND),
    ("pwritev_1000_files_wide_size", "pwritev", 1000, WIDE_APPEND),
    ("mmap_1_file_wide_size", "mmap", 1, WIDE_APPEND),
    ("mmap_1000_files_wide_size", "mmap", 1000, WIDE_APPEND),
    ("pwritev_1_file_1000", "pwritev", 1, 1000),
    ("pwritev_1000_files_1000", "pwritev", 1000, 1000),
    ("mmap_1_file_1000", "mmap", 1, 1000),
    ("mmap_1000_files_1000", "mmap", 1000, 1000),
]


def storage_floor(megabytes: float = 100.0, rounds: int = 5) -> dict:
    """Every case of :data:`STORAGE_CASES`, ``rounds`` times in turn; the medians of CPU
    ms per MB, and the ratios the server's figure is held against: 1000 files over one
    file at the same append size (the cost of spreading alone), and the replay's wide
    case (1000 files, 8.8 KB, pwritev) over its one-partition case (one file, 990 KB)."""
    runs: dict[str, list[dict]] = {name: [] for name, *_ in STORAGE_CASES}
    for _ in range(rounds):
        for name, mode, files, size in STORAGE_CASES:
            runs[name].append(storage_append(mode, files, size, megabytes))
    out: dict = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}

    def ratio(a: str, b: str) -> float:
        return out[a]["cpu_ms_per_mb"] / out[b]["cpu_ms_per_mb"]

    out["ratios"] = {
        "pwritev_spread_wide_size": ratio("pwritev_1000_files_wide_size", "pwritev_1_file_wide_size"),
        "mmap_spread_wide_size": ratio("mmap_1000_files_wide_size", "mmap_1_file_wide_size"),
        "pwritev_spread_1000": ratio("pwritev_1000_files_1000", "pwritev_1_file_1000"),
        "mmap_spread_1000": ratio("mmap_1000_files_1000", "mmap_1_file_1000"),
        "replay_wide_to_one": ratio("pwritev_1000_files_wide_size", "pwritev_1_file_one_size"),
    }
    return out


# --------------------------------------------------------------------------------------
# Apache Kafka beside pylog serve
# --------------------------------------------------------------------------------------


def _kafka_classpath() -> str:
    from benches.bench_vs_kafka import kafka_classpath

    return kafka_classpath()


def server_replay(server, partitions: int, batch_records: int, megabytes: float) -> float:
    """CPU ms per MB of ``server`` (started, topic ``replay-<partitions>`` created and
    warmed by :func:`_prepare`) for the replay of ``bench_scale.produce_replay``."""
    from benches.bench_scale import replay_stream

    return replay_stream(server, f"replay-{partitions}", partitions, batch_records, megabytes)["cpu_ms_per_mb"]


def _prepare(server, partitions: int, batch_records: int) -> None:
    from benches.bench_scale import warm_partitions
    from benches.bench_server import _create_topic

    _create_topic(server.bootstrap, f"replay-{partitions}", partitions)
    warm_partitions(server, f"replay-{partitions}", partitions, batch_records)
    _create_topic(server.bootstrap, f"spread-{partitions}", partitions)
    warm_partitions(server, f"spread-{partitions}", partitions, 1)


def _spread(server, partitions: int, records: int) -> float:
    from benches.bench_scale import RECORD, produce_spread

    c0 = server.cpu_seconds()
    produce_spread(server.bootstrap, f"spread-{partitions}", records, partitions)
    return (server.cpu_seconds() - c0) * 1000 / (records * len(RECORD) / 1e6)


class _Precise:
    """A ``ChildServer`` whose CPU time is read in nanoseconds (``process_cpu_seconds``:
    the run time of its live threads) rather than in 10 ms clock ticks.  For pylog,
    whose threads live as long as the process; a JVM's come and go, and its figures
    are large enough for ticks."""

    def __init__(self, server) -> None:
        self.server = server

    def __getattr__(self, name: str):
        return getattr(self.server, name)

    def start(self) -> "_Precise":
        self.server.start()
        return self

    def cpu_seconds(self) -> float:
        from benches.bench_server import process_cpu_seconds

        self.server.check_alive()
        return process_cpu_seconds(self.server.proc.pid)


def kafka_replay(megabytes: float = 100.0, records: int = 1_000_000, rounds: int = 5,
                 servers: tuple[str, ...] = ("kafka", "pylog"), wide: int = 1000) -> dict:
    """For Apache Kafka and ``pylog serve`` (each one process for the whole run): CPU ms
    per MB of the replay with 1 and with ``wide`` partitions, and of a confluent-kafka
    producer spreading ``records`` 100-byte records over 1 and ``wide`` partitions;
    medians of ``rounds`` rounds, the servers alternating within a round; each figure's
    wide-to-1 ratio."""
    from pylog.server.kafka_peer import KafkaServer, PylogServer

    made = {"kafka": lambda: KafkaServer(_kafka_classpath()), "pylog": lambda: _Precise(PylogServer())}
    live = {}
    runs: dict = {name: {k: [] for k in ("replay_1", "replay_wide", "spread_1", "spread_wide")}
                  for name in servers}
    try:
        for name in servers:
            live[name] = made[name]().start()
            for n, batch in ((1, 9000), (wide, 80)):
                _prepare(live[name], n, batch)
            # Unmeasured: a pass of each workload (the JVM compiles its hot paths).
            server_replay(live[name], 1, 9000, megabytes / 2)
            server_replay(live[name], wide, 80, megabytes / 4)
            _spread(live[name], wide, records // 4)
        for r in range(rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for name in order:
                s = live[name]
                runs[name]["replay_1"].append(server_replay(s, 1, 9000, megabytes * 3))
                runs[name]["replay_wide"].append(server_replay(s, wide, 80, megabytes))
                runs[name]["spread_1"].append(_spread(s, 1, records))
                runs[name]["spread_wide"].append(_spread(s, wide, records))
    finally:
        for s in live.values():
            s.close()
    out: dict = {"load_average": os.getloadavg()}
    for name in servers:
        med = {k: statistics.median(v) for k, v in runs[name].items()}
        med["replay_ratio"] = med["replay_wide"] / med["replay_1"]
        med["spread_ratio"] = med["spread_wide"] / med["spread_1"]
        med["runs"] = runs[name]
        out[name] = med
    return out


class _Once:
    timeout = 3600
    number = 1
    repeat = 1


class StorageFloor(_Once):
    def setup_cache(self) -> dict:
        return storage_floor()

    def track_pwritev_spread_ratio(self, fig: dict) -> float:
        return fig["ratios"]["pwritev_spread_wide_size"]

    def track_mmap_spread_ratio(self, fig: dict) -> float:
        return fig["ratios"]["mmap_spread_wide_size"]

    def track_replay_wide_to_one_ratio(self, fig: dict) -> float:
        return fig["ratios"]["replay_wide_to_one"]

    track_pwritev_spread_ratio.unit = track_mmap_spread_ratio.unit = "ratio"
    track_replay_wide_to_one_ratio.unit = "ratio"


class KafkaReplay(_Once):
    params = ["kafka", "pylog"]
    param_names = ["server"]

    def setup_cache(self) -> dict:
        return kafka_replay()

    def track_replay_cpu_ratio_1000_to_1(self, fig: dict, server: str) -> float:
        return fig[server]["replay_ratio"]

    def track_spread_cpu_ratio_1000_to_1(self, fig: dict, server: str) -> float:
        return fig[server]["spread_ratio"]

    track_replay_cpu_ratio_1000_to_1.unit = track_spread_cpu_ratio_1000_to_1.unit = "ratio"


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print("load average", os.getloadavg())
    t0 = time.monotonic()
    floor = storage_floor(rounds=rounds)
    for name, fig in floor.items():
        print(f"{name:32s}", {k: round(v, 3) for k, v in fig.items()})
    print("load average", os.getloadavg(), f"{time.monotonic() - t0:.0f} s")
    fig = kafka_replay(rounds=rounds)
    for name in ("kafka", "pylog"):
        print(name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in fig[name].items() if k != "runs"})
    print("load average", fig["load_average"], "->", os.getloadavg())
