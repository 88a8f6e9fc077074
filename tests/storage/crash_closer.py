"""Child process of the close crash test: killed by SIGKILL in the middle of a clean close.

    python -m tests.storage.crash_closer <data_dir> <kill_point>

``data_dir`` is a cleanly closed broker data directory holding topic ``wide``.  The child
opens it (its partitions load deferred), appends one record with the idempotent producer
to every other partition, prints ``acked <partition> <offset> <value>`` for each record
acknowledged (acks=all), then ``closing``, and closes the broker.  During the close it
kills itself with SIGKILL at ``kill_point``, one of the steps that
:meth:`pylog.storage.manager.LogManager.close` documents:

- ``logs:N``: after the N-th ``Log.close`` (some logs closed without any sync, some open);
- ``syncfs``: right after the first ``syncfs`` (snapshot ``.tmp`` files not renamed yet);
- ``rename:N``: after N producer snapshots were renamed into place;
- ``checkpoint``: after the recovery-point checkpoint was written, before the marker.

The hook is this script wrapping pylog's own functions: nothing in pylog reads a fault
switch.  A kill point the close never reaches exits with status 3.
"""

import os
import signal
import sys

import pylog
from pylog.storage import checkpoint as _checkpoint
from pylog.storage import log as _log_mod
from pylog.storage import manager as _manager

TOPIC = "wide"


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner, name: str, nth: int) -> None:
    """Wrap ``owner.name`` so the process dies after its ``nth`` call returns."""
    real = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] >= nth:
            _die()
        return out

    setattr(owner, name, wrapper)


def _install(kill_point: str) -> None:
    what, _, n = kill_point.partition(":")
    if what == "logs":
        _after(_log_mod.Log, "close", int(n))
    elif what == "syncfs":
        _after(_manager, "sync_filesystem", 1)
    elif what == "rename":
        real_replace = os.replace
        calls = [0]

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            if str(dst).endswith(".snapshot"):
                calls[0] += 1
                if calls[0] >= int(n):
                    _die()

        os.replace = replace
    elif what == "checkpoint":
        _after(_checkpoint.CheckpointFile, "write", 1)
    else:
        raise SystemExit(f"unknown kill point {kill_point!r}")


def main() -> None:
    data_dir, kill_point = sys.argv[1], sys.argv[2]
    client = pylog.open(data_dir, background=False)
    partitions = client.broker.num_partitions(TOPIC)
    with client.producer(linger_ms=0, acks="all") as p:
        futures = [(i, b"second-%d" % i, None) for i in range(0, partitions, 2)]
        futures = [(i, v, p.send(TOPIC, v, partition=i)) for i, v, _ in futures]
        p.flush()
        for i, v, fut in futures:
            print(f"acked {i} {fut.result().offset} {v.decode()}")
    print("closing", flush=True)
    _install(kill_point)
    client.close()
    sys.exit(3)


if __name__ == "__main__":
    main()
