"""An in-memory ZooKeeper for deterministic tests of the cluster's controller logic.

:class:`MemoryZooKeeper` is one "ensemble": a znode tree, a zxid counter and sessions.
Each :meth:`MemoryZooKeeper.connect` returns a :class:`MemoryZNodeStore`, a client with
its own session, implementing :class:`~pylog.cluster.coordination.ZNodeStore` with
ZooKeeper's semantics: versions and conditional writes, ephemeral znodes owned by a
session (deleted when it closes or expires), sequential znodes numbered by the parent's
child creations (cversion), all-or-nothing multi-ops, level-triggered watches that are re-armed after a
session expiry. :meth:`MemoryZooKeeper.expire_session` does what ZooKeeper does when a
client falls silent for its session timeout. There is no network, so no connection loss.

Nothing is stored on disk; a crash loses everything (this is a test double).

Thread safety: all state is under one lock. Watch and session callbacks run on the
thread that made the change, after the change and outside the lock, in the order the
changes happened; a change made inside a callback is delivered after the current
callback returns (never re-entrantly), so a single-threaded test sees a deterministic
sequence of events.
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pylog.cluster.coordination import (ANY_VERSION, BadVersionError, CheckOp, CreateOp, DeleteOp,
                                        NoChildrenForEphemeralsError, NodeExistsError, NoNodeError,
                                        NotEmptyError, Op, SessionListener, SetDataOp, ZNodeStat)
from pylog.errors import CoordinationError

__all__ = ["MemoryZooKeeper", "MemoryZNodeStore"]


@dataclass
class _ZNode:
    data: bytes
    czxid: int
    mzxid: int
    ephemeral_owner: int
    version: int = 0
    cversion: int = 0
    children: set[str] = field(default_factory=set)

    def stat(self) -> ZNodeStat:
        return ZNodeStat(self.version, self.czxid, self.mzxid, self.ephemeral_owner, len(self.children))


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _check_path(path: str) -> None:
    if not path.startswith("/") or (path != "/" and (path.endswith("/") or "//" in path)):
        raise ValueError(f"{path!r} is not a znode path")


class _WatchHandle:
    def __init__(self, server: MemoryZooKeeper, owner: MemoryZNodeStore, path: str, kind: str,
                 callback: Callable[..., None]) -> None:
        self.server, self.owner, self.path, self.kind, self.callback = server, owner, path, kind, callback
        self.last: Any = ()  # the value last delivered; () = nothing yet
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        with self.server._lock:
            if self in self.server._watches:
                self.server._watches.remove(self)


class MemoryZooKeeper:
    """An in-memory ZooKeeper ensemble (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[str, _ZNode] = {"/": _ZNode(b"", 0, 0, 0)}
        self._zxid = 0
        self._session_ids = itertools.count(0x100000001)
        self._stores: dict[int, MemoryZNodeStore] = {}
        self._watches: list[_WatchHandle] = []
        self._pending: collections.deque[Callable[[], None]] = collections.deque()
        self._delivering = False

    def connect(self) -> MemoryZNodeStore:
        """A new client with a new session."""
        return MemoryZNodeStore(self)

    def expire_session(self, session_id: int) -> None:
        """Expire a session as ZooKeeper does: its ephemerals go (watches fire), then its
        client is told the session expired, gets a new session, and is told that too."""
        with self._lock:
            store = self._stores.get(session_id)
            if store is None:
                raise CoordinationError(f"no live session 0x{session_id:x}")
            self._end_session(session_id)
            store._session_id = self._new_session(store)
            for listener in store._listeners:
                if listener.on_session_expired:
                    self._pending.append(listener.on_session_expired)
            for listener in store._listeners:
                if listener.on_session_reestablished:
                    self._pending.append(listener.on_session_reestablished)
            for watch in self._watches:
                if watch.owner is store:
                    self._pending.append(functools.partial(self._fire, watch))
        self._deliver()

    # -- internals (call with the lock held, then _deliver() after releasing it)

    def _new_session(self, store: MemoryZNodeStore) -> int:
        session_id = next(self._session_ids)
        self._stores[session_id] = store
        return session_id

    def _end_session(self, session_id: int) -> None:
        del self._stores[session_id]
        self._zxid += 1
        for path in sorted((p for p, n in self._nodes.items() if n.ephemeral_owner == session_id), reverse=True):
            self._remove(path)

    def _touched(self, path: str, children_of: str | None = None) -> None:
        for watch in self._watches:
            if watch.path == (path if watch.kind == "data" else children_of):
                self._pending.append(functools.partial(self._fire, watch))

    def _fire(self, watch: _WatchHandle) -> None:
        # Level-triggered: deliver the value current now, once per distinct value.
        with self._lock:
            if watch.cancelled:
                return
            node = self._nodes.get(watch.path)
            if watch.kind == "data":
                value: Any = (node.data, node.stat()) if node else (None, None)
                key: Any = node.mzxid if node else None
            else:
                if node is None:  # ChildrenWatch stops when its znode is deleted
                    watch.cancel()
                    return
                value = (sorted(node.children),)
                key = value[0]
            if watch.last == key:
                return
            watch.last = key
        watch.callback(*value)

    def _deliver(self) -> None:
        with self._lock:
            if self._delivering:
                return
            self._delivering = True
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    call = self._pending.popleft()
                call()
        finally:
            with self._lock:
                self._delivering = False

    def _remove(self, path: str) -> None:
        del self._nodes[path]
        parent = self._nodes[_parent(path)]
        # ZooKeeper numbers sequential children from the parent's cversion, which counts
        # creations only (checked against a real server in test_coordination_stores).
        parent.children.discard(path.rsplit("/", 1)[1])
        self._touched(path, None)
        self._touched(_parent(path), _parent(path))

    def _apply(self, op: Op, session_id: int) -> Any:
        """One operation on the tree (the lock is held; raises without changing anything)."""
        _check_path(op.path)
        node = self._nodes.get(op.path)
        if isinstance(op, CheckOp):
            if node is None:
                raise NoNodeError(f"{op.path} does not exist", path=op.path)
            if op.version != ANY_VERSION and op.version != node.version:
                raise BadVersionError(f"{op.path} is at version {node.version}, not {op.version}", path=op.path)
            return None
        if isinstance(op, CreateOp):
            parent = self._nodes.get(_parent(op.path))
            if parent is None:
                raise NoNodeError(f"the parent of {op.path} does not exist", path=op.path)
            if parent.ephemeral_owner:
                raise NoChildrenForEphemeralsError(f"{_parent(op.path)} is ephemeral", path=op.path)
            path = f"{op.path}{parent.cversion:010d}" if op.sequential else op.path
            if path in self._nodes:
                raise NodeExistsError(f"{path} exists", path=path)
            self._nodes[path] = _ZNode(op.data, self._zxid, self._zxid, session_id if op.ephemeral else 0)
            parent.children.add(path.rsplit("/", 1)[1])
            parent.cversion += 1
            self._touched(path, None)
            self._touched(_parent(path), _parent(path))
            return path
        if node is None:
            raise NoNodeError(f"{op.path} does not exist", path=op.path)
        if op.version != ANY_VERSION and op.version != node.version:
            raise BadVersionError(f"{op.path} is at version {node.version}, not {op.version}", path=op.path)
        if isinstance(op, SetDataOp):
            node.data, node.version, node.mzxid = op.data, node.version + 1, self._zxid
            self._touched(op.path, None)
            return node.stat()
        if node.children:
            raise NotEmptyError(f"{op.path} has children", path=op.path)
        self._remove(op.path)
        return None


class MemoryZNodeStore:
    """A client session on a :class:`MemoryZooKeeper` (a ZNodeStore)."""

    def __init__(self, server: MemoryZooKeeper) -> None:
        self._server = server
        self._listeners: list[SessionListener] = []
        self._closed = False
        with server._lock:
            self._session_id = server._new_session(self)

    @property
    def session_id(self) -> int:
        return self._session_id

    def _op(self, ops: Sequence[Op], is_multi: bool = False) -> list[Any]:
        server = self._server
        with server._lock:
            if self._closed:
                raise CoordinationError("the coordination session is closed")
            # All or nothing: run on the live tree, put the saved tree back on failure.
            saved_nodes = {p: _ZNode(n.data, n.czxid, n.mzxid, n.ephemeral_owner, n.version, n.cversion,
                                     set(n.children)) for p, n in server._nodes.items()}
            saved_pending = len(server._pending)
            server._zxid += 1
            results = []
            for index, op in enumerate(ops):
                try:
                    results.append(server._apply(op, self._session_id))
                except Exception as e:
                    server._nodes = saved_nodes
                    while len(server._pending) > saved_pending:
                        server._pending.pop()
                    if is_multi and hasattr(e, "op_index"):
                        e.op_index = index
                    raise
        server._deliver()
        return results

    def create(self, path: str, data: bytes = b"", *, ephemeral: bool = False, sequential: bool = False,
               makepath: bool = False) -> tuple[str, ZNodeStat]:
        if makepath:
            parts = path.split("/")[1:-1]
            for i in range(1, len(parts) + 1):
                try:
                    self._op([CreateOp("/" + "/".join(parts[:i]))])
                except NodeExistsError:
                    pass
        created = self._op([CreateOp(path, bytes(data), ephemeral, sequential)])[0]
        stat = self.exists(created)
        assert stat is not None
        return created, stat

    def get(self, path: str) -> tuple[bytes, ZNodeStat] | None:
        with self._server._lock:
            node = self._server._nodes.get(path)
            return None if node is None else (node.data, node.stat())

    def exists(self, path: str) -> ZNodeStat | None:
        got = self.get(path)
        return None if got is None else got[1]

    def set(self, path: str, data: bytes, version: int = ANY_VERSION) -> ZNodeStat:
        return self._op([SetDataOp(path, bytes(data), version)])[0]

    def delete(self, path: str, version: int = ANY_VERSION, *, recursive: bool = False) -> None:
        if recursive:
            for child in self.get_children(path):
                self.delete(f"{path}/{child}", recursive=True)
        self._op([DeleteOp(path, version)])

    def get_children(self, path: str) -> list[str]:
        with self._server._lock:
            node = self._server._nodes.get(path)
            if node is None:
                raise NoNodeError(f"{path} does not exist", path=path)
            return sorted(node.children)

    def multi(self, ops: Sequence[Op]) -> list[Any]:
        return self._op(ops, is_multi=True)

    def _watch(self, path: str, kind: str, callback: Callable[..., None]) -> _WatchHandle:
        server = self._server
        with server._lock:
            if kind == "children" and path not in server._nodes:
                raise NoNodeError(f"{path} does not exist: cannot watch its children", path=path)
            watch = _WatchHandle(server, self, path, kind, callback)
            server._watches.append(watch)
            server._pending.append(functools.partial(server._fire, watch))
        server._deliver()
        return watch

    def watch_data(self, path: str, callback: Callable[[bytes | None, ZNodeStat | None], None]) -> _WatchHandle:
        return self._watch(path, "data", callback)

    def watch_children(self, path: str, callback: Callable[[list[str]], None]) -> _WatchHandle:
        return self._watch(path, "children", callback)

    def add_session_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def close(self) -> None:
        server = self._server
        with server._lock:
            if self._closed:
                return
            self._closed = True
            server._watches = [w for w in server._watches if w.owner is not self]
            server._end_session(self._session_id)
        server._deliver()
