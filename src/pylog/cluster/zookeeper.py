"""The production coordination store: a real ZooKeeper through kazoo.

:func:`connect` parses Kafka's ``zookeeper.connect`` (``host:port[,host:port...][/chroot]``),
creates the chroot when it is missing (as a Kafka broker does), opens one kazoo session and
returns a :class:`~pylog.cluster.coordination.Coordination` on a :class:`KazooZNodeStore`.
Timeouts are Kafka's settings: ``zookeeper.session.timeout.ms`` (default 18000) and
``zookeeper.connection.timeout.ms`` (default: the session timeout) for the first connect.
Kafka's znode layout is in :mod:`pylog.cluster.coordination`; this module only maps the
store primitives onto kazoo: conditional ``set(version=)``/``delete(version=)``, ephemeral
and sequential ``create``, ``transaction()`` for multi-ops, and kazoo's ``DataWatch`` and
``ChildrenWatch`` recipes (which re-arm themselves after a session expiry).

Crash behaviour: on a connection loss kazoo reconnects on its own (to any host of the
list) and the session, with its ephemeral znodes and watches, survives as long as the
reconnect happens within the session timeout. A request in flight when the connection
dropped is retried once connected again, for up to the session timeout; a write whose
retry finds it already applied (the ephemeral is ours, the data is what we wrote) counts
as done, so a connection loss never turns a successful write into an error or a
duplicate. When ZooKeeper expires the session (kazoo's LOST state) every ephemeral is
gone: ``on_session_expired`` fires, kazoo opens a new session, then
``on_session_reestablished`` fires. Requests made meanwhile raise
:class:`~pylog.errors.CoordinationError`.

A client cut off from every ZooKeeper server hears of the expiry only when it reaches one
again (kazoo stays SUSPENDED meanwhile), while ZooKeeper expires the session a session
timeout after it last heard from it, and the controller elects other leaders then. So
the store does not wait to be told: SUSPENDED for a third of the session timeout (kazoo
suspends when a ping goes unanswered for two thirds of it, so by then ZooKeeper has
heard nothing for a whole timeout) counts as expired here, and ``on_session_expired``
fires at once; a broker stops acting as leader then, not when the network heals. Should
the session turn out to be alive on reconnecting (ZooKeeper expires sessions on its tick,
a little late), it is ended on purpose and a new one opened, so what the broker gave up
and what ZooKeeper says agree again.

Thread safety: a store may be used from any thread. Session callbacks are queued on
kazoo's callback thread (in order, after the state change), except the expiry taken
while cut off, called on a timer thread of the store's; watch callbacks run on that
thread or on a thread kazoo spawns to re-read after a reconnect. Hand them over to your
own loop or queue; never block in them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Sequence

from kazoo import exceptions as _kx
from kazoo.client import KazooClient, KazooState
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import Callback
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.retry import KazooRetry, RetryFailedError

from pylog.cluster.coordination import (ANY_VERSION, BadVersionError, CheckOp, Coordination, CreateOp, DeleteOp,
                                        NoChildrenForEphemeralsError, NodeExistsError, NoNodeError, NotEmptyError,
                                        Op, SessionListener, SetDataOp, ZNodeError, ZNodeStat)
from pylog.errors import CoordinationError, InvalidConfigError

__all__ = ["DEFAULT_SESSION_TIMEOUT_MS", "KazooZNodeStore", "connect", "parse_connect_string"]

log = logging.getLogger(__name__)

#: Kafka's zookeeper.session.timeout.ms default.
DEFAULT_SESSION_TIMEOUT_MS = 18000

_ERRORS: dict[type[Exception], type[ZNodeError]] = {
    _kx.NoNodeError: NoNodeError,
    _kx.NodeExistsError: NodeExistsError,
    _kx.BadVersionError: BadVersionError,
    _kx.NotEmptyError: NotEmptyError,
    _kx.NoChildrenForEphemeralsError: NoChildrenForEphemeralsError,
}


def parse_connect_string(connect: str) -> tuple[str, str]:
    """Split ``host:port[,host:port]/chroot`` into (hosts, chroot or "").  Raises
    InvalidConfigError for a string without a host, a host without a valid port, or a
    chroot that is not a plain absolute path."""
    connect = connect.strip()
    hosts, slash, chroot = connect.partition("/")
    if not hosts:
        raise InvalidConfigError(f"zookeeper.connect {connect!r} names no host")
    for entry in hosts.split(","):
        host, colon, port = entry.strip().rpartition(":")
        if not colon:
            host, port = port, "2181"     # ZooKeeper's client port when none is given
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidConfigError(f"zookeeper.connect {connect!r}: {entry!r} is not HOST:PORT")
    chroot = (slash + chroot).rstrip("/")
    if chroot and ("//" in chroot or any(part in (".", "..") for part in chroot.split("/"))):
        raise InvalidConfigError(f"zookeeper.connect {connect!r}: {chroot!r} is not a valid chroot path")
    return hosts, chroot


def connect(zookeeper_connect: str, *, session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
            connection_timeout_ms: int | None = None) -> Coordination:
    """Open a session on ZooKeeper and return the cluster's :class:`Coordination` on it.

    Raises
    ------
    CoordinationError
        ZooKeeper did not answer within ``connection_timeout_ms``.
    """
    store = KazooZNodeStore(zookeeper_connect, session_timeout_ms=session_timeout_ms,
                            connection_timeout_ms=connection_timeout_ms)
    try:
        return Coordination(store)
    except BaseException:
        store.close()
        raise


class _DataWatchHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class KazooZNodeStore:
    """A :class:`~pylog.cluster.coordination.ZNodeStore` on one kazoo session."""

    def __init__(self, zookeeper_connect: str, *, session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
                 connection_timeout_ms: int | None = None) -> None:
        hosts, chroot = parse_connect_string(zookeeper_connect)
        self._connect = zookeeper_connect
        self._session_timeout = session_timeout_ms / 1000
        self._connection_timeout = (connection_timeout_ms if connection_timeout_ms is not None
                                    else session_timeout_ms) / 1000
        self._listeners: list[SessionListener] = []
        self._lost = False
        self._closing = False
        self._closed = threading.Event()
        # Suspended too long: taken as expired here before ZooKeeper can say so (see the
        # module docstring).  _suspensions counts SUSPENDED states, so a timer of an
        # earlier one that ended does nothing.
        self._expired_here = False
        self._suspensions = 0
        self._state_lock = threading.Lock()
        if chroot:
            # kazoo does not create the chroot (and warns when it is missing): a client
            # without it creates it first, as Kafka's broker does.
            root = self._client_for(hosts)
            self._start(root)
            try:
                root.ensure_path(chroot)
            finally:
                root.stop()
                root.close()
        self._client = self._client_for(hosts + chroot)
        self._client.add_listener(self._on_state)
        self._start(self._client)
        # Requests retry through connection losses for up to a session timeout; a session
        # expiry is final for the request (the session listener handles it).
        self._retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0, ignore_expire=False,
                                 deadline=self._session_timeout)

    def _client_for(self, hosts: str) -> KazooClient:
        # Reconnect quickly (at most 1 s between attempts) so that a short ZooKeeper pause
        # does not outlast the session.
        return KazooClient(hosts=hosts, timeout=self._session_timeout,
                           connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0))

    def _start(self, client: KazooClient) -> None:
        try:
            client.start(timeout=self._connection_timeout)
        except KazooTimeoutError:
            client.close()
            raise CoordinationError(
                f"could not connect to ZooKeeper at {self._connect} within {self._connection_timeout * 1000:.0f} ms "
                f"(zookeeper.connection.timeout.ms): is it running and reachable?") from None

    @property
    def client(self) -> KazooClient:
        """The kazoo client (for tests and tools; the cluster code uses the store methods)."""
        return self._client

    @property
    def session_id(self) -> int:
        client_id = self._client.client_id
        return client_id[0] if client_id else 0

    # -- session lifecycle

    def _on_state(self, state: str) -> None:
        # Runs on kazoo's connection thread: only record and queue, never block here.
        with self._state_lock:
            self._suspensions += 1
            if state == KazooState.LOST:
                if self._closing:
                    return
                log.warning("ZooKeeper session expired (%s): its ephemeral znodes are gone", self._connect)
                self._lost = True
                if not self._expired_here:
                    self._dispatch("on_session_expired")
            elif state == KazooState.SUSPENDED:
                log.warning("connection to ZooKeeper (%s) lost; reconnecting within the session timeout",
                            self._connect)
                timer = threading.Timer(self._session_timeout / 3, self._suspended_too_long, (self._suspensions,))
                timer.daemon = True
                timer.start()
            elif state == KazooState.CONNECTED and self._lost:
                self._lost = False
                self._expired_here = False
                log.warning("new ZooKeeper session 0x%x (%s)", self.session_id, self._connect)
                self._dispatch("on_session_reestablished")
            elif state == KazooState.CONNECTED and self._expired_here and not self._closing:
                # Reconnected within ZooKeeper's own expiry after all: the session lives on
                # but the broker has given up what it held.  End it; the new one follows.
                log.warning("ZooKeeper session 0x%x outlived the session timeout here: ending it for a new "
                            "one (%s)", self.session_id, self._connect)
                threading.Thread(target=self._restart_session, name="pylog-zk-restart", daemon=True).start()

    def _suspended_too_long(self, suspension: int) -> None:
        with self._state_lock:
            if suspension != self._suspensions or self._closing or self._lost or self._expired_here:
                return          # reconnected (or another state came) meanwhile
            self._expired_here = True
            log.warning("no contact with ZooKeeper (%s) for the session timeout: acting as if the session "
                        "expired (ZooKeeper has expired it or is about to)", self._connect)
            listeners = list(self._listeners)
        # Called here (this timer's own thread), not queued on kazoo's callback thread: a
        # watch callback there may be waiting for ZooKeeper, which is out of reach.
        for listener in listeners:
            fn = listener.on_session_expired
            if fn is not None:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - a listener's bug must not hide the expiry from the others
                    log.exception("session listener %r failed", listener)

    def _restart_session(self) -> None:
        """(A thread of its own.)  End the session taken for expired here and open a new
        one.  A kazoo client whose start timed out is stopped and never reconnects on its
        own, so the start is retried (backing off up to 1 s) until a session opens or the
        store closes: ZooKeeper may be out of reach again just as the old session ends."""
        try:
            self._client.stop()
        except Exception:  # noqa: BLE001 - the session then ends at ZooKeeper's own expiry
            log.exception("ending the ZooKeeper session after a local expiry failed")
        delay = 0.05
        while not self._closing:
            try:
                self._client.start(timeout=self._connection_timeout)
            except Exception as exc:  # noqa: BLE001 - unreachable for now: try again
                log.warning("no new ZooKeeper session yet (%s): %r; retrying", self._connect, exc)
                if self._closed.wait(delay):
                    return
                delay = min(delay * 2, 1.0)
                continue
            if self._closing:       # closed while starting: do not leave a session open
                self._client.stop()
            return

    def _dispatch(self, which: str) -> None:
        for listener in self._listeners:
            fn = getattr(listener, which)
            if fn is not None:
                self._client.handler.dispatch_callback(Callback("session", fn, ()))

    def add_session_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def close(self) -> None:
        self._closing = True
        self._closed.set()
        try:
            self._client.stop()
        finally:
            self._client.close()

    # -- requests

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            # A copy per request: a KazooRetry counts attempts and is not thread-safe.
            return self._retry.copy()(fn, *args, **kwargs)
        except tuple(_ERRORS) as e:
            raise _ERRORS[type(e)](f"{type(e).__name__} on {args[0] if args else '?'}",
                                   path=args[0] if args and isinstance(args[0], str) else None) from None
        except _kx.SessionExpiredError:
            raise CoordinationError(f"the ZooKeeper session expired during the request ({self._connect})") from None
        except (RetryFailedError, _kx.ConnectionLoss, _kx.OperationTimeoutError):
            raise CoordinationError(f"ZooKeeper ({self._connect}) did not answer within the session timeout "
                                    f"({self._session_timeout * 1000:.0f} ms)") from None
        except _kx.ConnectionClosedError:
            raise CoordinationError("the coordination session is closed") from None

    def _retried_write(self, attempt: Callable[[], Any], already_applied: Callable[[], Any]) -> Any:
        """Run a write; when a retry after a connection loss fails on NodeExists/BadVersion/
        NoNode, ``already_applied()`` returns its result if the first attempt did land."""
        attempts = 0

        def once() -> Any:
            nonlocal attempts
            attempts += 1
            return attempt()
        try:
            return self._call(once)
        except (NodeExistsError, BadVersionError, NoNodeError):
            if attempts > 1:
                result = already_applied()
                if result is not None:
                    log.info("a write retried after a ZooKeeper connection loss had landed before it")
                    return result
            raise

    def create(self, path: str, data: bytes = b"", *, ephemeral: bool = False, sequential: bool = False,
               makepath: bool = False) -> tuple[str, ZNodeStat]:
        def attempt() -> tuple[str, ZNodeStat]:
            created, stat = self._client.create(path, bytes(data), ephemeral=ephemeral, sequence=sequential,
                                                makepath=makepath, include_data=True)
            return created, _stat(stat)

        def applied() -> tuple[str, ZNodeStat] | None:
            got = None if sequential else self.get(path)
            if got is not None and got[0] == data and (got[1].ephemeral_owner == (self.session_id if ephemeral else 0)):
                return path, got[1]
            return None
        try:
            return self._retried_write(attempt, applied)
        except NodeExistsError:
            raise NodeExistsError(f"{path} exists", path=path) from None
        except NoNodeError:
            raise NoNodeError(f"the parent of {path} does not exist", path=path) from None

    def get(self, path: str) -> tuple[bytes, ZNodeStat] | None:
        try:
            data, stat = self._call(self._client.get, path)
        except NoNodeError:
            return None
        return data, _stat(stat)

    def exists(self, path: str) -> ZNodeStat | None:
        stat = self._call(self._client.exists, path)
        return None if stat is None else _stat(stat)

    def set(self, path: str, data: bytes, version: int = ANY_VERSION) -> ZNodeStat:
        def applied() -> ZNodeStat | None:
            got = self.get(path)
            ok = got is not None and got[0] == data and (version == ANY_VERSION or got[1].version == version + 1)
            return got[1] if ok and got is not None else None
        try:
            return self._retried_write(lambda: _stat(self._client.set(path, bytes(data), version=version)), applied)
        except BadVersionError:
            raise BadVersionError(f"{path} is not at version {version}", path=path) from None
        except NoNodeError:
            raise NoNodeError(f"{path} does not exist", path=path) from None

    def delete(self, path: str, version: int = ANY_VERSION, *, recursive: bool = False) -> None:
        try:
            self._retried_write(lambda: self._client.delete(path, version=version, recursive=recursive),
                                lambda: True if self.exists(path) is None else None)
        except NoNodeError:
            raise NoNodeError(f"{path} does not exist", path=path) from None

    def get_children(self, path: str) -> list[str]:
        return sorted(self._call(self._client.get_children, path))

    def multi(self, ops: Sequence[Op]) -> list[Any]:
        def attempt() -> list[Any]:
            transaction = self._client.transaction()
            for op in ops:
                if isinstance(op, CheckOp):
                    transaction.check(op.path, op.version)
                elif isinstance(op, CreateOp):
                    transaction.create(op.path, bytes(op.data), ephemeral=op.ephemeral, sequence=op.sequential)
                elif isinstance(op, SetDataOp):
                    transaction.set_data(op.path, bytes(op.data), version=op.version)
                else:
                    transaction.delete(op.path, version=op.version)
            results = transaction.commit()
            for index, result in enumerate(results):
                if isinstance(result, Exception) and not isinstance(result, _kx.RolledBackError):
                    error = _ERRORS.get(type(result))
                    if error is None:
                        raise result
                    raise error(f"{type(result).__name__} on {ops[index].path} (operation {index} of a multi-op)",
                                path=ops[index].path, op_index=index)
            return [_stat(r) if isinstance(op, SetDataOp) else (r if isinstance(op, CreateOp) else None)
                    for op, r in zip(ops, results)]

        def applied() -> list[Any] | None:
            # Landed if every write shows its effect (checks cannot be re-verified; the
            # writes that follow them only landed if they passed).
            out: list[Any] = []
            for op in ops:
                if isinstance(op, CheckOp):
                    out.append(None)
                elif isinstance(op, DeleteOp):
                    if self.exists(op.path) is not None:
                        return None
                    out.append(None)
                else:
                    got = None if getattr(op, "sequential", False) else self.get(op.path)
                    if got is None or got[0] != op.data:
                        return None
                    if isinstance(op, SetDataOp) and op.version not in (ANY_VERSION, got[1].version - 1):
                        return None
                    if isinstance(op, CreateOp):
                        if got[1].ephemeral_owner != (self.session_id if op.ephemeral else 0):
                            return None
                        out.append(op.path)
                    else:
                        out.append(got[1])
            return out if any(not isinstance(op, CheckOp) for op in ops) else None
        return self._retried_write(attempt, applied)

    # -- watches (kazoo's recipes)

    def watch_data(self, path: str, callback: Callable[[bytes | None, ZNodeStat | None], None]) -> _DataWatchHandle:
        handle = _DataWatchHandle()

        def on_change(data: bytes | None, stat: Any) -> bool | None:
            if handle.cancelled:
                return False  # kazoo stops the recipe
            callback(data, None if stat is None else _stat(stat))
            return None
        DataWatch(self._client, path, on_change)
        return handle

    def watch_children(self, path: str, callback: Callable[[list[str]], None]) -> _DataWatchHandle:
        if self.exists(path) is None:
            raise NoNodeError(f"{path} does not exist: cannot watch its children", path=path)
        handle = _DataWatchHandle()

        def on_change(children: list[str]) -> bool | None:
            if handle.cancelled:
                return False
            callback(sorted(children))
            return None
        ChildrenWatch(self._client, path, on_change)
        return handle


def _stat(stat: Any) -> ZNodeStat:
    return ZNodeStat(stat.version, stat.czxid, stat.mzxid, stat.ephemeralOwner, stat.numChildren)
