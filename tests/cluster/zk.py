"""A real ZooKeeper for the cluster tests (imported as ``cluster.zk``).

:class:`ZooKeeperServer` runs Debian's ``zookeeper`` package (the jars under
/usr/share/java) as a standalone server on a free 127.0.0.1 port, with its own data
directory and zoo.cfg (admin server off, four-letter words off), and stops it (SIGTERM,
then SIGKILL of the JVM) at the end. :meth:`ZooKeeperServer.paused` freezes the JVM
(SIGSTOP/SIGCONT) to cut every client off from ZooKeeper without closing a socket;
:class:`TcpProxy` cuts off only the clients connected through it.
:func:`expire_session` forces ZooKeeper to expire a kazoo session: a second client
joins the same session (id and password) and closes it, the known ZooKeeper trick.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Iterator

from pylog.cluster.local import ZOOKEEPER_JAR, free_port, java  # noqa: F401 - re-exported for the tests
from pylog.cluster.local import ZooKeeperServer as _LocalZooKeeperServer


def ensure_installed() -> str | None:
    """None when ZooKeeper and Java are here (installing Debian's package when apt-get can),
    else the reason they are not."""
    if ZOOKEEPER_JAR.exists() and java():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return "Debian's zookeeper package is not installed and apt-get is not available"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        return "Debian's zookeeper package is not installed and installing needs root"
    for cmd in ([*prefix, apt, "update", "-qq"], [*prefix, apt, "install", "-y", "-qq", "zookeeper"]):
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            return f"Debian's zookeeper package is not installed and `{' '.join(cmd)}` failed: {done.stderr[-300:]}"
    if ZOOKEEPER_JAR.exists() and java():
        return None
    return "apt-get installed zookeeper but /usr/share/java/zookeeper.jar or java is still missing"


class ZooKeeperServer(_LocalZooKeeperServer):
    """pylog's local ZooKeeper (:class:`pylog.cluster.local.ZooKeeperServer`, shared with
    ``pylog cluster up``), plus the fault the tests inject: a frozen JVM."""

    def __init__(self, data_dir: Path, tick_time_ms: int = 500) -> None:
        super().__init__(data_dir, tick_time_ms)
        self._pause_lock = threading.Lock()

    def kill(self) -> None:
        """SIGKILL the JVM and reap it: the end of a test session, when nothing of this
        server is kept (a SIGTERM'd JVM takes a second or so to exit)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the ZooKeeper JVM (SIGSTOP) for the body; it resumes (SIGCONT) after."""
        assert self.proc is not None
        with self._pause_lock:
            os.kill(self.proc.pid, signal.SIGSTOP)
            try:
                yield
            finally:
                os.kill(self.proc.pid, signal.SIGCONT)


class TcpProxy:
    """A loopback TCP proxy to ``target`` that can cut its clients off.

    :meth:`cut` closes every proxied connection and turns new ones away (accepted, then
    closed at once) until :meth:`heal`: a client behind it is cut off from ZooKeeper
    while ZooKeeper and every other client carry on, so ZooKeeper expires its session.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._threads = [threading.Thread(target=self._accept_loop, name="zk-proxy", daemon=True)]
        self._threads[0].start()

    def _accept_loop(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed or self._cut:
                    downstream.close()
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {downstream, upstream}
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                t = threading.Thread(target=self._pump, args=(src, dst), name="zk-proxy-pump", daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            socks = list(self._sockets)
        self._drop(*socks)

    def heal(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for t in self._threads:
            t.join(10)


def expire_session(hosts: str, client_id: tuple[int, bytes]) -> None:
    """Make ZooKeeper expire the session ``client_id`` (kazoo's ``client.client_id``): a
    second client attaches to the same session and closes it. The first client then
    finds its session expired on its next request or reconnect."""
    from kazoo.client import KazooClient

    intruder = KazooClient(hosts=hosts, client_id=client_id, timeout=10)
    intruder.start(timeout=10)
    intruder.stop()
    intruder.close()
