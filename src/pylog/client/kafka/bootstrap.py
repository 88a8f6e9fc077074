"""Wait for a first answer from the bootstrap servers, or say at once that none answers.

``pylog.connect`` connects in the background, and an unreachable cluster shows as
retriable errors once a call's ``request_timeout_ms`` has passed: right for a service
that outlives a broker restart.  A command-line tool wants the opposite: a refused
connection reported at once, naming the servers it tried.  :func:`wait_for_bootstrap`
asks each bootstrap server for metadata in turn (the network client tries the ones that
have not failed first) until one answers.
"""

from __future__ import annotations

import time
from typing import Any

from pylog.errors import NetworkError, RequestTimedOutError

__all__ = ["wait_for_bootstrap"]


def wait_for_bootstrap(client: Any, timeout: float) -> None:
    """Block until a bootstrap server of ``client`` (a ``pylog.connect`` client) has
    answered a Metadata request.

    Parameters
    ----------
    client : pylog.Client
        Over the Kafka-protocol transport.
    timeout : float
        Seconds in all.

    Raises
    ------
    NetworkError
        Every bootstrap server refused or dropped the connection (tried once each).
    RequestTimedOutError
        No answer within ``timeout``.
    """
    net = client.transport.net
    servers = ",".join(f"{n.host}:{n.port}" for n in net.cluster.bootstrap_nodes.values())
    deadline = time.monotonic() + timeout
    last: NetworkError | None = None
    for _ in range(max(1, len(net.cluster.bootstrap_nodes))):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        future = net.refresh_metadata([], timeout_ms=max(1, int(left * 1000)))
        try:
            future.result(left + 1)
            return
        except NetworkError as exc:
            last = exc
    if last is None:
        raise RequestTimedOutError(f"no answer from the bootstrap servers ({servers}) within {timeout:g} s")
    raise NetworkError(f"no bootstrap server reachable ({servers}): {last}")
