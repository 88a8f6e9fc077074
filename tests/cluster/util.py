"""Helpers of the cluster tests that start brokers."""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator


def kill_all(cluster: Any) -> None:
    """SIGKILL every broker of ``cluster`` (a :class:`~pylog.cluster.local.LocalCluster`,
    or a :class:`cluster.proxy.ProxiedCluster`) and reap them."""
    local = getattr(cluster, "cluster", cluster)
    for i in sorted(local.procs):
        local.stop_broker(i, signal.SIGKILL)


@contextlib.contextmanager
def killed_at_exit(cluster: Any) -> Iterator[Any]:
    """``with cluster``, ended by SIGKILLs instead of ``stop()``'s controlled shutdowns,
    for a test that checks nothing about how its brokers stop.  Those take 1.5-3 s a
    cluster: one broker at a time moves its leaderships away and waits (up to 1 s) for
    its peers' metadata to name the new leaders, and the last one asks the controller
    three times, 0.5 s apart, to move leaderships it has nowhere to move.  How a broker
    stops is checked where it is the subject (test_cluster_controlled_shutdown.py, the
    SIGTERM case of test_cluster_replication.py, test_cluster_cli.py)."""
    with cluster:
        try:
            yield cluster
        finally:
            kill_all(cluster)
