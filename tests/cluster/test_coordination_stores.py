"""The in-memory store against a real ZooKeeper, operation by operation.

Random sequences of ZooKeeper primitives (create: persistent, ephemeral, sequential;
conditional set and delete; multi-ops with checks) run on both stores; every result,
every error (and, in a multi-op, which operation failed) and the final tree must be the
same. This is what lets the controller's deterministic model tests trust the
in-memory store.
"""

from __future__ import annotations

import collections
import dataclasses
import random

import pytest

from cluster.test_coordination import registration
from pylog.cluster.coordination import CheckOp, Coordination, CreateOp, DeleteOp, SetDataOp, ZNodeError
from pylog.cluster.coordination_memory import MemoryZooKeeper
from pylog.cluster.zookeeper import KazooZNodeStore

PATHS = ["/a", "/a/b", "/a/c", "/a/b/x", "/d", "/d/e"]


def random_op(rng: random.Random):
    kind = rng.choices(["create", "set", "delete", "check"], weights=[5, 2, 2, 1])[0]
    path = rng.choices(PATHS, weights=[5, 3, 2, 1, 4, 2])[0]
    data = rng.choice([b"", b"x", b"yy"])
    version = rng.choice([-1, 0, 0, 1, 2])
    if kind == "create":
        sequential = rng.random() < 0.25
        return CreateOp(path + "/s-" if sequential else path, data, ephemeral=rng.random() < 0.3,
                        sequential=sequential)
    if kind == "set":
        return SetDataOp(path, data, version)
    if kind == "delete":
        return DeleteOp(path, version)
    return CheckOp(path, version)


def run(store, base: str, op):
    """The op on ``store`` under ``base``, as a comparable outcome."""
    def rel(path: str) -> str:
        return path[len(base):]
    try:
        if isinstance(op, list):
            results = store.multi([dataclasses.replace(o, path=base + o.path) for o in op])
            return ("multi", [rel(r) if isinstance(r, str) else (r.version, r.num_children) if r else None
                              for r in results])
        op = dataclasses.replace(op, path=base + op.path)
        if isinstance(op, CreateOp):
            path, stat = store.create(op.path, op.data, ephemeral=op.ephemeral, sequential=op.sequential)
            return ("created", rel(path), stat.version, stat.ephemeral_owner != 0)
        if isinstance(op, SetDataOp):
            return ("set", store.set(op.path, op.data, op.version).version)
        if isinstance(op, DeleteOp):
            return ("deleted", store.delete(op.path, op.version))
        got = store.get(op.path)
        return ("get", None if got is None else (got[0], got[1].version, got[1].num_children))
    except ZNodeError as e:
        return ("error", type(e).__name__, e.op_index)


def tree(store, path: str, base: str) -> list:
    got = store.get(path)
    if got is None:
        return []
    data, stat = got
    out = [(path[len(base):] or "/", data, stat.version, stat.num_children, stat.ephemeral_owner != 0)]
    for child in store.get_children(path):
        out += tree(store, f"{path}/{child}", base)
    return out


@pytest.fixture
def stores(zk_connect):
    real = KazooZNodeStore(zk_connect, session_timeout_ms=10000)
    memory = MemoryZooKeeper().connect()
    yield real, memory
    real.close()
    memory.close()


def test_memory_store_matches_zookeeper_op_by_op(stores, rng):
    real, memory = stores
    outcomes: collections.Counter = collections.Counter()
    for run_index in range(25):
        base = f"/run{run_index}"
        real.create(base, b"")
        memory.create(base, b"")
        for step in range(30):
            op = random_op(rng) if rng.random() < 0.75 else [random_op(rng) for _ in range(rng.randint(2, 4))]
            got_real, got_memory = run(real, base, op), run(memory, base, op)
            assert got_memory == got_real, f"run {run_index} step {step}: {op}"
            outcomes[got_real[0] if got_real[0] != "error" else got_real[1]] += 1
        assert tree(memory, base, base) == tree(real, base, base), f"run {run_index}"
    # The sequences reached every kind of outcome, failures included.
    assert set(outcomes) >= {"created", "set", "deleted", "get", "multi", "NoNodeError", "NodeExistsError",
                             "BadVersionError", "NotEmptyError", "NoChildrenForEphemeralsError"}, outcomes


def test_memory_store_delivers_in_order_before_the_write_returns():
    # What makes the controller's model tests deterministic: no threads, no waiting.
    server = MemoryZooKeeper()
    a, b = Coordination(server.connect()), Coordination(server.connect())
    seen: list = []
    b.watch_brokers(lambda ids: seen.append(("brokers", ids)))
    b.watch_controller(lambda cid: seen.append(("controller", cid)))

    def on_brokers_in_callback(ids):
        # A write made inside a callback is delivered after this callback, never inside it.
        if ids == [1] and a.get_controller() is None:
            seen.append(("electing", ids))
            a.elect_controller(1)
            seen.append(("elected", ids))
    a.watch_brokers(on_brokers_in_callback)
    a.register_broker(registration(1))
    assert seen == [("brokers", []), ("controller", None), ("brokers", [1]), ("electing", [1]), ("elected", [1]),
                    ("controller", 1)]
    server.expire_session(a.session_id)
    assert sorted(seen[-2:]) == [("brokers", []), ("controller", None)]
