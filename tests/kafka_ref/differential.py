"""Apache Kafka and `pylog serve` side by side: one request to both, answers compared.

:class:`Twin` holds a :class:`tests.wire.WireClient` to each server.  ``Twin.exchange``
sends the same request body, at the same version, to both and returns the two decoded
answers; :func:`canon` turns an answer into plain data where every field that may
differ between the two servers (the short list :data:`MAY_DIFFER`) is replaced by what
both must agree on: ids by the order in which they first appeared on that side (a
producer id, a topic id or a member id is consistent within one server, not equal
across them), the server's own node id, host and port by ``"self"``.  Record batches are
compared byte for byte but for their CRC (it covers the producer id) and the producer
id itself, which is compared through its alias; every CRC is checked on its own side.

Not thread-safe: one Twin per thread, as the wire clients are.
"""

from __future__ import annotations

import difflib
import pprint
import struct
import uuid
from typing import Any

from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey, api_name
from pylog.records import iter_batches
from tests.wire import BrokerConnection, WireClient

__all__ = ["MAY_DIFFER", "Twin", "Side", "canon", "diff_text"]

#: Fields whose values may differ between Apache Kafka and pylog, with the reason, and
#: what is compared instead.
MAY_DIFFER = {
    "throttle_time_ms": "quota throttling is timing: ignored",
    "cluster_id": "each server has its own cluster id: only whether it is set is compared",
    "node_id/leader_id/controller_id/coordinator_id/replica_nodes/isr_nodes/offline_replicas":
        "node ids differ (Kafka's fixture: 1, pylog: 0): the server's own id reads 'self'",
    "host/port": "addresses differ: the server's own address reads 'self'",
    "topic_id": "random UUIDs: aliased by order of appearance (zero stays zero)",
    "producer_id (responses and record batches)": "allocated per server: aliased by order of appearance",
    "member_id/leader (JoinGroup)/group_instance_id": "generated member ids: aliased by order of appearance",
    "error_message/batch_index_error_message": "free text, worded differently: ignored; the error "
                                               "codes are compared",
    "order of configs (CreateTopics, DescribeConfigs) and of DeleteTopics answers":
        "Kafka takes the order from a hash map: compared sorted by name",
    "a partial batch at the end of a Fetch's records":
        "Kafka cuts the records at max_bytes (clients drop the partial batch), pylog sends "
        "whole batches only: removed before comparing",
    "topic configs only one server has (CONFIG_GAP) and min.insync.replicas; synonyms of "
    "topic configs": "pylog's topic configs are Kafka 3.9's (see the test module's docstring)",
    "crc (record batches)": "covers the producer id; checked on each side instead",
}

_ALIASED = {
    "topic_id": "topic",
    "producer_id": "pid",
    "member_id": "member",
    "group_instance_id": "instance",
}
_IGNORED = {"throttle_time_ms", "error_message", "batch_index_error_message"}
_NODE_FIELDS = {"node_id", "leader_id", "controller_id", "coordinator_id"}
_NODE_LISTS = {"replica_nodes", "isr_nodes", "offline_replicas"}
_ZERO_UUID = uuid.UUID(int=0)
#: Topic configs only one of the two servers has (Kafka 4.4 added the first four and
#: removed the last three; pylog's set is Kafka 3.9's), and min.insync.replicas, which
#: ``kafka-storage format`` makes a cluster-wide dynamic config on Kafka's side.
CONFIG_GAP = frozenset({
    "errors.deadletterqueue.group.enable", "max.decompressed.message.bytes", "remote.copy.lag.bytes",
    "remote.copy.lag.ms", "message.downconversion.enable", "message.format.version",
    "message.timestamp.difference.max.ms", "min.insync.replicas"})
#: Lists of named entries whose order Kafka takes from a hash map: compared sorted by name.
_UNORDERED = {"configs"}


class Side:
    """One server: its wire client, node id and address, and the aliases of its ids."""

    def __init__(self, name: str, bootstrap: str) -> None:
        self.name = name
        self.client = WireClient(bootstrap)
        meta = self.client.metadata([])
        assert len(meta.brokers) == 1, f"{name}: one broker expected, got {meta.brokers}"
        b = meta.brokers[0]
        self.node_id, self.host, self.port = b.node_id, b.host, b.port
        self.aliases: dict[str, dict[Any, str]] = {}

    def alias(self, kind: str, value: Any) -> Any:
        if value in (None, "", -1, _ZERO_UUID):
            return value
        table = self.aliases.setdefault(kind, {})
        if value not in table:
            table[value] = f"{kind}#{len(table)}"
        return table[value]

    def node(self, value: Any) -> Any:
        return "self" if value == self.node_id else value

    def reset_aliases(self) -> None:
        self.aliases.clear()

    def close(self) -> None:
        self.client.close()


class Twin:
    """Apache Kafka (``kafka``) and pylog (``pylog``) behind one interface."""

    def __init__(self, kafka_bootstrap: str, pylog_bootstrap: str) -> None:
        self.kafka = Side("Apache Kafka", kafka_bootstrap)
        try:
            self.pylog = Side("pylog", pylog_bootstrap)
        except BaseException:
            self.kafka.close()
            raise
        self.sides = (self.kafka, self.pylog)

    def close(self) -> None:
        for s in self.sides:
            s.close()

    def version(self, api_key: int) -> int:
        """The highest version both servers (and pylog's codec) speak."""
        hi = min(s.client.bootstrap.version(api_key) for s in self.sides)
        lo = max(s.client.bootstrap.versions[api_key][0] for s in self.sides)
        assert lo <= hi, f"{api_name(api_key)}: no version in common"
        return hi

    def versions(self, api_key: int) -> tuple[int, int]:
        """The lowest and highest version both servers (and pylog's codec) speak."""
        lo = max(s.client.bootstrap.versions[api_key][0] for s in self.sides)
        return lo, self.version(api_key)

    def exchange(self, api_key: int, body: Any, *, version: int | None = None,
                 conn: str = "bootstrap", group: str | None = None, timeout: float = 30.0
                 ) -> tuple[Any, Any]:
        """Send ``body`` to both; returns (Kafka's answer, pylog's answer).

        ``body`` is a request, or a function of the :class:`Side` returning one (for
        requests that carry a server's own ids: producer ids, member ids).  ``conn``:
        "bootstrap" (the one broker), or "coordinator" of ``group``.
        """
        v = self.version(api_key) if version is None else version
        out = []
        for s in self.sides:
            c: BrokerConnection = s.client.coordinator(group) if conn == "coordinator" else s.client.bootstrap
            out.append(c.request_with_timeout(api_key, body(s) if callable(body) else body, timeout, v))
        return out[0], out[1]

    def compare(self, api_key: int, body: Any, **kw: Any) -> tuple[Any, Any]:
        """:meth:`exchange`, then assert both answers are equal but for :data:`MAY_DIFFER`."""
        k, p = self.exchange(api_key, body, **kw)
        ck, cp = canon(k, self.kafka), canon(p, self.pylog)
        if ck != cp:
            v = kw.get("version") or self.version(api_key)
            raise AssertionError(f"{api_name(api_key)} v{v} answers differ (- Apache Kafka, + pylog):\n"
                                 + diff_text(ck, cp) + f"\nrequest: {_show(body, self.kafka)}")
        return k, p


def _show(body: Any, side: Side) -> str:
    return repr(body(side) if callable(body) else body)[:3000]


def canon(value: Any, side: Side, name: str = "") -> Any:
    """``value`` (a decoded answer) as plain data with :data:`MAY_DIFFER` applied."""
    if isinstance(value, m.Data):
        out = {}
        for f in value._fields:
            if f in _IGNORED:
                continue
            out[f] = canon(getattr(value, f), side, f)
        if type(value).__name__ == "DeleteTopicsResponse":
            out["responses"].sort(key=lambda d: d["name"] or "")
        if type(value).__name__ == "JoinGroupResponse":
            out["leader"] = side.alias("member", value.leader)
        if "host" in out and "port" in out:
            out["host"] = out["port"] = "self" if (value.host, value.port) == (side.host, side.port) else "other"
        if "cluster_id" in out:
            out["cluster_id"] = value.cluster_id is not None
        return out
    if isinstance(value, list):
        if name in _NODE_LISTS:
            return [side.node(x) for x in value]
        out = [canon(x, side, name) for x in value]
        if name == "configs":
            out = [c for c in out if c["name"] not in CONFIG_GAP]
            for c in out:
                c.pop("synonyms", None)
        if name in _UNORDERED:
            out.sort(key=lambda d: d["name"])
        return out
    if name in _ALIASED:
        return side.alias(_ALIASED[name], value)
    if name in _NODE_FIELDS:
        return side.node(value)
    if name == "records" and value is not None:
        return canon_records(bytes(value), side)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


_CRC = slice(17, 21)
_PID = slice(43, 51)


def canon_records(data: bytes, side: Side) -> list:
    """Batches as (bytes without CRC and producer id, producer id alias); a partial
    batch at the end (a Fetch cut by max_bytes) is left out."""
    out: list = []
    pos = 0
    for batch in iter_batches(data, check_crc=True):
        raw = data[pos:pos + batch.size]
        pid = struct.unpack(">q", raw[_PID])[0]
        out.append((raw[:_CRC.start] + raw[_CRC.stop:_PID.start] + raw[_PID.stop:],
                    side.alias("pid", pid)))
        pos += batch.size
    # Past ``pos``: a partial batch (MAY_DIFFER), left out.
    return out


def diff_text(a: Any, b: Any) -> str:
    la = pprint.pformat(a, width=110).splitlines()
    lb = pprint.pformat(b, width=110).splitlines()
    return "\n".join(difflib.unified_diff(la, lb, "Apache Kafka", "pylog", lineterm="", n=4))
