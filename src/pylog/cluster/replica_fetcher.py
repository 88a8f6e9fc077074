"""Followers fetching from their leaders: Kafka's ReplicaFetcherThread, on pylog's client.

One :class:`ReplicaFetcher` thread per leader broker this broker follows partitions of.
It asks each followed partition's :class:`pylog.cluster.replication.Partition` for its next
request, sends one Fetch (v12, ``replica_id`` = this broker, each partition with its
``current_leader_epoch`` and ``last_fetched_epoch``, so the leader answers a divergence
with a DivergingEpoch) through :class:`pylog.client.kafka.network.NetworkClient`, and
hands each partition's answer back to its state machine, which appends (keeping the
leader's offsets and epochs), truncates, or waits for the next LeaderAndIsr.  The leader
holds the Fetch up to ``replica.fetch.wait.max.ms`` (500) when it has nothing new.
Partitions handed to a fetcher while its Fetch is parked at the leader without them
(a leadership that just moved there) do not wait for that long poll: the fetcher drops
the connection (the parked Fetch with it) and asks again at once with every partition,
so the new leader's high watermark, and its acks=all produces, move on the follower's
first fetch rather than up to 500 ms later.
A partition this broker follows out of the ISR, listed in its topic's
``follower.replication.throttled.replicas``, is left out of the Fetch while the
follower quota (``follower.replication.throttled.rate``) is exceeded, and what it
fetches is counted against the quota (:mod:`pylog.cluster.quota`).

Crash behaviour: nothing is kept; a restarted follower starts from its log end offset.

Thread safety: :class:`FetcherManager` methods may be called from any thread; each
fetcher's thread is the only one that sends its Fetches; every state machine call takes
the replica's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pylog.cluster import replication
from pylog.errors import PylogError, error_for_code
from pylog.protocol.apis import ApiKey

__all__ = ["FetcherManager", "ReplicaFetcher", "REPLICA_FETCH_WAIT_MAX_MS"]

_log = logging.getLogger("pylog.cluster.replica_fetcher")

#: Kafka's replica.fetch.wait.max.ms and replica.fetch.max.bytes defaults.
REPLICA_FETCH_WAIT_MAX_MS = 500
REPLICA_FETCH_MAX_BYTES = 1 << 20
_FETCH_VERSION = 12


class ReplicaFetcher:
    """The fetch loop for the partitions this broker follows on one leader."""

    def __init__(self, node: Any, leader_id: int, host: str, port: int) -> None:
        from pylog.client.kafka.network import NetworkClient
        self.node = node
        self.leader_id = leader_id
        self.address = (host, port)
        self.partitions: set[tuple[str, int]] = set()
        self._cond = threading.Condition()
        self._closed = False
        #: Bumped by every :meth:`add`: a Fetch built before it is rebuilt, not sent.
        self._generation = 0
        #: (node, partitions) of the Fetch on the wire, and whether :meth:`add` dropped it.
        self._in_flight: tuple[int, frozenset[tuple[str, int]]] | None = None
        self._dropped = False
        self.client = NetworkClient(f"{host}:{port}", client_id=f"pylog-replica-fetcher-{node.broker_id}-{leader_id}",
                                    request_timeout_ms=REPLICA_FETCH_WAIT_MAX_MS + 30_000)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pylog-replica-fetcher-{node.broker_id}-{leader_id}")
        self._thread.start()

    def add(self, tps: Any) -> None:
        """Fetch ``tps`` (topic-partitions) too, from now on (module docstring)."""
        with self._cond:
            self.partitions.update(tps)
            self._generation += 1
            self._cond.notify_all()
            if self._in_flight is not None and not self._dropped and not self._in_flight[1].issuperset(tps):
                self._dropped = True
                _log.debug("fetcher of broker %d from leader %d: %s added while a Fetch is on the wire without "
                           "them; dropping it", self.node.broker_id, self.leader_id,
                           ", ".join(f"{t}-{p}" for t, p in tps))
                # In order with the Fetch's send (both under the lock): release() fails it.
                self.client.release(self._in_flight[0])

    def remove(self, tp: tuple[str, int]) -> None:
        with self._cond:
            self.partitions.discard(tp)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.client.close(timeout=1.0)
        self._thread.join(timeout=5.0)

    def _requests(self) -> dict[tuple[str, int], tuple[Any, replication.FetchRequest]]:
        out = {}
        replicas = self.node.replica_manager.replicas
        quota = self.node.follower_quota
        now = int(time.time() * 1000)
        for tp in list(self.partitions):
            r = replicas.get(tp)
            if r is None:
                continue
            with r.lock:
                if r.state.leader_id != self.leader_id:
                    continue
                if quota.is_throttled(*tp) and quota.should_throttle(
                        *tp, self.node.broker_id in r.state.isr, now):
                    continue
                req = r.state.fetch_request(REPLICA_FETCH_MAX_BYTES)
            if isinstance(req, replication.FetchRequest):
                out[tp] = (r, req)
        return out

    def _run(self) -> None:
        from pylog.protocol import messages as m
        F: Any = m.FetchRequest
        while True:
            with self._cond:
                while not self._closed and not self.partitions:
                    self._cond.wait()
                if self._closed:
                    return
                generation = self._generation
            wanted = self._requests()
            if not wanted:
                with self._cond:
                    self._cond.wait(REPLICA_FETCH_WAIT_MAX_MS / 1000)
                continue
            topics: dict[str, list[Any]] = {}
            for (topic, partition), (_r, req) in wanted.items():
                topics.setdefault(topic, []).append(F.FetchPartition(
                    partition=partition, current_leader_epoch=req.current_leader_epoch,
                    fetch_offset=req.fetch_offset, last_fetched_epoch=req.last_fetched_epoch,
                    log_start_offset=-1, partition_max_bytes=req.max_bytes))
            body = F(replica_id=self.node.broker_id, max_wait_ms=REPLICA_FETCH_WAIT_MAX_MS, min_bytes=1,
                     max_bytes=10 * REPLICA_FETCH_MAX_BYTES, isolation_level=0, session_id=0, session_epoch=-1,
                     topics=[F.FetchTopic(topic=t, partitions=ps) for t, ps in topics.items()],
                     forgotten_topics_data=[], rack_id="")
            # To the leader by its id once the client has its metadata (one connection
            # kept open), to its address as the bootstrap node before.
            node = self.leader_id if self.client.cluster.node(self.leader_id) is not None else -1
            dropped = False
            try:
                with self._cond:
                    if self._closed:
                        return
                    if self._generation != generation:
                        continue        # partitions were added meanwhile: build it again
                    fut = self.client.send(node, ApiKey.FETCH, body, version=_FETCH_VERSION)
                    self._in_flight = (node, frozenset(wanted))
                try:
                    resp = fut.result()
                finally:
                    with self._cond:
                        dropped, self._dropped, self._in_flight = self._dropped, False, None
            except PylogError as exc:
                if not dropped:
                    _log.debug("fetch from leader %d: %s", self.leader_id, exc)
                    with self._cond:
                        self._cond.wait(0.2)
                continue
            self._handle(resp, wanted)

    def _handle(self, resp: Any, wanted: dict) -> None:
        manager = self.node.replica_manager
        quota = self.node.follower_quota
        now = int(time.time() * 1000)
        for t in resp.responses:
            for p in t.partitions:
                got = wanted.get((t.topic, p.partition_index))
                if got is None:
                    continue
                r, req = got
                error = error_for_code(p.error_code, None) if p.error_code else None
                diverging = None
                de = p.diverging_epoch
                if de is not None and de.epoch >= 0:
                    diverging = replication.EpochEndOffset(de.epoch, de.end_offset)
                records = p.records if p.records is not None and len(p.records) else None
                if records is not None and quota.is_throttled(t.topic, p.partition_index):
                    quota.record(len(records), now)
                response = replication.FetchResponse(error, p.high_watermark, p.log_start_offset, records, diverging)
                try:
                    with r.lock:
                        hw = r.state.high_watermark
                        r.state.handle_fetch_response(req, response)
                        moved = r.state.high_watermark != hw
                except PylogError as exc:
                    _log.warning("follower append to %s-%d failed: %s", t.topic, p.partition_index, exc)
                    continue
                if moved or records is not None:
                    manager.broker.notify_high_watermark(t.topic, p.partition_index, r.state.high_watermark)


class FetcherManager:
    """The fetchers of one broker, by leader (Kafka's ReplicaFetcherManager)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._fetchers: dict[tuple[int, str, int], ReplicaFetcher] = {}
        self._of: dict[tuple[str, int], tuple[int, str, int]] = {}
        self._closed = False

    def _address(self, leader_id: int, live_leaders: Any) -> tuple[str, int] | None:
        for b in live_leaders:
            if b.broker_id == leader_id and b.endpoints:
                return b.endpoints[0].host, b.endpoints[0].port
        b = self.node.metadata.brokers.get(leader_id)
        if b is not None and b.endpoints:
            return b.endpoints[0].host, b.endpoints[0].port
        return None

    def add_partition(self, tp: tuple[str, int], leader_id: int, live_leaders: Any = ()) -> None:
        self.add_partitions([(tp, leader_id)], live_leaders)

    def add_partitions(self, follow: Any, live_leaders: Any = ()) -> None:
        """Fetch each ``(tp, leader_id)`` of ``follow`` from its leader (one LeaderAndIsr's
        partitions at once, so each fetcher changes its Fetch once)."""
        by_key: dict[tuple[int, str, int], list[tuple[str, int]]] = {}
        for tp, leader_id in follow:
            address = self._address(leader_id, live_leaders)
            if address is None:
                _log.warning("no address for leader %d of %s-%d: not fetching", leader_id, *tp)
                self.remove_partition(tp)
            else:
                by_key.setdefault((leader_id, *address), []).append(tp)
        with self._lock:
            if self._closed:
                return
            for key, tps in by_key.items():
                moved = []
                for tp in tps:
                    old = self._of.get(tp)
                    if old == key:
                        continue
                    if old is not None:
                        self._fetchers[old].remove(tp)
                    self._of[tp] = key
                    moved.append(tp)
                if not moved:
                    continue
                fetcher = self._fetchers.get(key)
                if fetcher is None:
                    fetcher = self._fetchers[key] = ReplicaFetcher(self.node, key[0], key[1], key[2])
                fetcher.add(moved)

    def remove_partition(self, tp: tuple[str, int]) -> None:
        with self._lock:
            old = self._of.pop(tp, None)
            if old is not None:
                self._fetchers[old].remove(tp)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fetchers = list(self._fetchers.values())
            self._fetchers.clear()
            self._of.clear()
        for f in fetchers:
            f.close()
