"""Foreign-key table-table joins (KIP-213): ``left.join(right, foreign_key_extractor,
joiner)`` joins each row of ``left`` with the row of ``right`` whose key the extractor
finds in the left row, as Kafka Streams' ``KTableImpl.doJoinOnForeignKey`` does.

The two tables need not be co-partitioned.  Each left-row update becomes a
*subscription* sent, keyed by the foreign key, through the internal topic
``<application.id>-KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-<n>-topic`` to the task
that owns that foreign key; there the *subscription store* remembers which primary
keys subscribe to which foreign key, and a *response* (the right row, or nothing) goes
back, keyed by the primary key, through
``<application.id>-KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-<n>-topic`` to the partition
the subscription came from.  A right-row update scans the subscription store for its
foreign key and sends a response to every subscriber.  The *resolver* drops a response
whose hash of the left value (MurmurHash3 x64 128 of the serialised value, Kafka's seed
104729) no longer matches the left table's current value: it answered an update that
has since been overtaken.  Node, store and topic names, and the index each one takes
from the builder, are Kafka's, so ``describe()`` prints Kafka's text.

Bytes on the internal topics are Kafka's, so Kafka's tools and a Kafka Streams peer
read them:

- subscription (``SubscriptionWrapper`` v1): one byte ``0x80 if hash is null | version``,
  one byte instruction (0 ``DELETE_KEY_NO_PROPAGATE``, 1 ``DELETE_KEY_AND_PROPAGATE``,
  2 ``PROPAGATE_NULL_IF_NO_FK_VAL_AVAILABLE``, 3 ``PROPAGATE_ONLY_IF_FK_VAL_AVAILABLE``),
  the 16-byte hash unless null, the serialised primary key, the 4-byte big-endian
  partition of the left row;
- response (``SubscriptionResponseWrapper`` v0): one byte ``0x80 if hash is null |
  version``, the 16-byte hash unless null, the serialised right value (absent when null);
- subscription store (timestamped key-value, changelog
  ``<application.id>-KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-<n>-changelog``): key =
  4-byte big-endian length of the serialised foreign key, the foreign key, the primary
  key (so one foreign key's subscribers are one prefix scan); value = the subscription.

Crash behaviour: the subscription store is restored from its changelog like every
store; a response lost with a crash is re-sent when the input is re-processed
(at-least-once).  The processors run on their task's thread only.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional, Tuple

from . import _processors as P
from .builder import arity, name_of
from .options import Materialized, _Options
from .processor import Record
from .serdes import Serde, Serdes, SerializationError
from .topology import TopologyError

__all__ = ["TableJoined", "SubscriptionWrapper", "SubscriptionResponseWrapper", "murmur3_hash128",
           "DELETE_KEY_NO_PROPAGATE", "DELETE_KEY_AND_PROPAGATE", "PROPAGATE_NULL_IF_NO_FK_VAL_AVAILABLE",
           "PROPAGATE_ONLY_IF_FK_VAL_AVAILABLE", "foreign_key_join"]

# Kafka's SubscriptionWrapper.Instruction values (the byte on the wire)
DELETE_KEY_NO_PROPAGATE = 0
DELETE_KEY_AND_PROPAGATE = 1
PROPAGATE_NULL_IF_NO_FK_VAL_AVAILABLE = 2
PROPAGATE_ONLY_IF_FK_VAL_AVAILABLE = 3

SUBSCRIPTION_VERSION = 1
RESPONSE_VERSION = 0

_TS = struct.Struct(">q")
_LEN = struct.Struct(">i")
_M64 = (1 << 64) - 1
_C1, _C2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
MURMUR3_SEED = 104729   # Kafka's Murmur3.DEFAULT_SEED


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    return k ^ (k >> 33)


def murmur3_hash128(data: bytes, seed: int = MURMUR3_SEED) -> bytes:
    """MurmurHash3 x64 128 of ``data`` as Kafka Streams' ``Murmur3.hash128`` computes it,
    returned as the 16 bytes Kafka writes (the two 64-bit halves, big-endian)."""
    n = len(data)
    h1 = h2 = seed
    blocks = n // 16
    from_le = int.from_bytes
    for i in range(0, blocks * 16, 16):
        k1 = (from_le(data[i:i + 8], "little") * _C1) & _M64
        h1 ^= (_rotl(k1, 31) * _C2) & _M64
        h1 = ((_rotl(h1, 27) + h2) * 5 + 0x52DCE729) & _M64
        k2 = (from_le(data[i + 8:i + 16], "little") * _C2) & _M64
        h2 ^= (_rotl(k2, 33) * _C1) & _M64
        h2 = ((_rotl(h2, 31) + h1) * 5 + 0x38495AB5) & _M64
    tail = data[blocks * 16:]
    if len(tail) > 8:
        h2 ^= (_rotl((from_le(tail[8:], "little") * _C2) & _M64, 33) * _C1) & _M64
    if tail:
        h1 ^= (_rotl((from_le(tail[:8], "little") * _C1) & _M64, 31) * _C2) & _M64
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    return h1.to_bytes(8, "big") + h2.to_bytes(8, "big")


# ---- the wrappers and their serdes ------------------------------------------------------

class SubscriptionWrapper:
    """A subscription of ``primary_key`` (whose left value hashes to ``hash``, 16 bytes or
    ``None`` for a deleted row) to the foreign key the record is keyed by."""

    __slots__ = ("hash", "instruction", "primary_key", "version", "primary_partition")

    def __init__(self, hash: Optional[bytes], instruction: int, primary_key: Any,
                 primary_partition: Optional[int], version: int = SUBSCRIPTION_VERSION) -> None:
        self.hash = hash
        self.instruction = instruction
        self.primary_key = primary_key
        self.primary_partition = primary_partition
        self.version = version

    def __repr__(self) -> str:
        return (f"SubscriptionWrapper(instruction={self.instruction}, primary_key={self.primary_key!r}, "
                f"partition={self.primary_partition}, hash={None if self.hash is None else self.hash.hex()})")


class SubscriptionResponseWrapper:
    """The right row (``foreign_value``, ``None`` when absent) answering a subscription
    whose left value hashed to ``hash``; ``primary_partition`` routes it home."""

    __slots__ = ("hash", "foreign_value", "primary_partition", "version")

    def __init__(self, hash: Optional[bytes], foreign_value: Any, primary_partition: Optional[int],
                 version: int = RESPONSE_VERSION) -> None:
        self.hash = hash
        self.foreign_value = foreign_value
        self.primary_partition = primary_partition
        self.version = version

    def __repr__(self) -> str:
        return f"SubscriptionResponseWrapper(foreign_value={self.foreign_value!r}, partition={self.primary_partition})"


class _ResponseBytes(bytes):
    """A serialised response that still knows the partition it must go to, for the
    response sink's partitioner (the partition is not part of Kafka's v0 bytes)."""

    primary_partition: Optional[int] = None


def subscription_serde(primary_key_serde: Serde) -> Serde:
    """Kafka's ``SubscriptionWrapperSerde`` (format in the module docstring)."""
    kser, kde = primary_key_serde.serialize, primary_key_serde.deserialize

    def ser(w: SubscriptionWrapper) -> bytes:
        head = bytes([w.version if w.hash is not None else (w.version | 0x80), w.instruction])
        pk = kser(w.primary_key)
        body = head + (w.hash or b"") + pk
        if w.version > 0:
            body += _LEN.pack(w.primary_partition or 0)
        return body

    def de(data: bytes) -> SubscriptionWrapper:
        if len(data) < 2:
            raise SerializationError(f"a subscription has at least 2 bytes, got {len(data)}")
        version = data[0] & 0x7F
        if version > SUBSCRIPTION_VERSION:
            raise SerializationError(f"subscription version {version} is newer than this pylog reads "
                                     f"({SUBSCRIPTION_VERSION}): upgrade pylog")
        pos = 2
        h = None
        if not data[0] & 0x80:
            h = bytes(data[2:18])
            pos = 18
        end = len(data) - (4 if version > 0 else 0)
        if end < pos:
            raise SerializationError(f"a subscription of {len(data)} bytes is truncated")
        partition = _LEN.unpack_from(data, end)[0] if version > 0 else None
        return SubscriptionWrapper(h, data[1], kde(bytes(data[pos:end])), partition, version)

    return Serde(ser, de, "subscription_wrapper")


def response_serde(foreign_value_serde: Serde) -> Serde:
    """Kafka's ``SubscriptionResponseWrapperSerde`` (format in the module docstring)."""
    vser, vde = foreign_value_serde.serialize, foreign_value_serde.deserialize

    def ser(w: SubscriptionResponseWrapper) -> bytes:
        head = bytes([w.version]) + w.hash if w.hash is not None else bytes([w.version | 0x80])
        out = _ResponseBytes(head + (vser(w.foreign_value) or b""))
        out.primary_partition = w.primary_partition
        return out

    def de(data: bytes) -> SubscriptionResponseWrapper:
        if not data:
            raise SerializationError("an empty subscription response")
        version = data[0] & 0x7F
        if version > RESPONSE_VERSION:
            raise SerializationError(f"subscription response version {version} is newer than this pylog reads "
                                     f"({RESPONSE_VERSION}): upgrade pylog")
        if data[0] & 0x80:
            h, pos = None, 1
        elif len(data) < 17:
            raise SerializationError(f"a subscription response of {len(data)} bytes is truncated")
        else:
            h, pos = bytes(data[1:17]), 17
        value = vde(bytes(data[pos:])) if len(data) > pos else None
        return SubscriptionResponseWrapper(h, value, None, version)

    return Serde(ser, de, "subscription_response_wrapper")


def _response_partitioner(left_partitioner: Any) -> Callable[[str, Any, Any, int], Optional[int]]:
    """The response sink's partitioner: back to the partition of the subscribing row
    (Kafka's v1 subscriptions carry it); for a subscription without one (v0, written by
    Kafka Streams before 3.5), the left table's partitioner, else the default one."""
    def partition(topic: str, key: Any, value: Any, num_partitions: int) -> Optional[int]:
        p = getattr(value, "primary_partition", None)
        if p is None and left_partitioner is not None:
            return left_partitioner(topic, key, value, num_partitions)
        return p
    return partition


# ---- options -------------------------------------------------------------------------

class TableJoined(_Options):
    """Name and partitioners of a foreign-key join (Kafka's ``TableJoined``):
    ``partitioner`` partitions the left table's topic, ``other_partitioner`` the right
    one's (``fn(topic, key_bytes, value_bytes, num_partitions) -> partition``); the
    subscriptions go out with ``other_partitioner``."""
    _fields = ("partitioner", "other_partitioner", "name")

    def __init__(self, partitioner: Any = None, other_partitioner: Any = None, name: Optional[str] = None) -> None:
        self.partitioner = partitioner
        self.other_partitioner = other_partitioner
        self.name = name

    @staticmethod
    def with_(partitioner: Any = None, other_partitioner: Any = None) -> "TableJoined":
        return TableJoined(partitioner, other_partitioner)

    @staticmethod
    def as_(name: str) -> "TableJoined":
        return TableJoined(name=name)

    def with_name(self, name: str) -> "TableJoined":
        return self._copy(name=name)

    def with_partitioner(self, partitioner: Any) -> "TableJoined":
        return self._copy(partitioner=partitioner)

    def with_other_partitioner(self, other_partitioner: Any) -> "TableJoined":
        return self._copy(other_partitioner=other_partitioner)


# ---- the processors ------------------------------------------------------------------

class SubscriptionSend(P._Base):
    """On the left table (Kafka's ``SubscriptionSendProcessorSupplier``): each update
    becomes the subscriptions (and unsubscriptions) keyed by the foreign keys of its old
    and new rows, with the instructions of Kafka's inner and left joins."""

    def __init__(self, extractor: Callable[[Any, Any], Any], fk_serde: Serde, value_serde: Serde,
                 left_join: bool) -> None:
        self.extract = extractor
        self.fk_ser = fk_serde.serialize
        self.value_ser = value_serde.serialize
        self.left_join = left_join

    def process(self, record: Record) -> None:
        key, change = record.key, record.value
        new, old = change.new_value, change.old_value
        self._hash: Optional[bytes] = None
        self._hashed = False
        old_fk = None if old is None else self.extract(key, old)
        if self.left_join:
            if old is None and new is None:
                return
            new_fk = None if new is None else self.extract(key, new)
            if old_fk is not None and self.fk_ser(new_fk) != self.fk_ser(old_fk):
                self._send(record, old_fk, DELETE_KEY_NO_PROPAGATE)
            self._send(record, new_fk, PROPAGATE_NULL_IF_NO_FK_VAL_AVAILABLE)
            return
        if new is not None:
            new_fk = self.extract(key, new)
            if new_fk is None:
                P._dropped(self.context, "null foreign key")
                if old_fk is not None:
                    self._send(record, old_fk, DELETE_KEY_AND_PROPAGATE)
            elif old_fk is None:
                self._send(record, new_fk, PROPAGATE_ONLY_IF_FK_VAL_AVAILABLE)
            elif self.fk_ser(new_fk) != self.fk_ser(old_fk):
                self._send(record, old_fk, DELETE_KEY_NO_PROPAGATE)
                self._send(record, new_fk, PROPAGATE_NULL_IF_NO_FK_VAL_AVAILABLE)
            else:
                self._send(record, new_fk, PROPAGATE_ONLY_IF_FK_VAL_AVAILABLE)
        elif old_fk is not None:
            self._send(record, old_fk, DELETE_KEY_AND_PROPAGATE)

    def _send(self, record: Record, fk: Any, instruction: int) -> None:
        if not self._hashed:
            new = record.value.new_value
            self._hash = None if new is None else murmur3_hash128(self.value_ser(new))
            self._hashed = True
        wrapper = SubscriptionWrapper(self._hash, instruction, record.key, self.context.partition)
        self.forward(Record(fk, wrapper, record.timestamp, record.headers))


class _CombinedKeys:
    """The subscription store's keys: ``len(fk) fk pk`` (Kafka's ``CombinedKeySchema``)."""

    def __init__(self, fk_serde: Serde, pk_serde: Serde) -> None:
        self.fk_ser = fk_serde.serialize
        self.pk_ser = pk_serde.serialize
        self.pk_de = pk_serde.deserialize

    def prefix(self, fk: Any) -> bytes:
        fkb = self.fk_ser(fk)
        return _LEN.pack(len(fkb)) + fkb

    def to_bytes(self, fk: Any, pk: Any) -> bytes:
        return self.prefix(fk) + self.pk_ser(pk)

    def primary_key(self, raw: bytes) -> Any:
        n = _LEN.unpack_from(raw)[0]
        if n < 0 or 4 + n > len(raw):
            raise SerializationError(f"a subscription store key of {len(raw)} bytes is truncated")
        return self.pk_de(bytes(raw[4 + n:]))


class _SubscriptionStoreUser(P._Base):
    """A processor of the subscription store, with its key schema and value serde."""

    def __init__(self, store_name: str, keys: _CombinedKeys, wrapper_serde: Serde) -> None:
        self.store_name = store_name
        self.keys = keys
        self.wser = wrapper_serde.serialize
        self.wde = wrapper_serde.deserialize

    def init(self, context: Any) -> None:
        super().init(context)
        self.store = context.get_state_store(self.store_name)


class SubscriptionReceive(_SubscriptionStoreUser):
    """On the right side (Kafka's ``SubscriptionReceiveProcessorSupplier``): keeps the
    subscription store up to date and passes each subscription on, keyed by
    ``(foreign key, primary key)``, with its timestamp."""

    def process(self, record: Record) -> None:
        fk, wrapper = record.key, record.value
        if wrapper is None or (fk is None and wrapper.instruction != PROPAGATE_NULL_IF_NO_FK_VAL_AVAILABLE):
            P._dropped(self.context, "null foreign key")
            return
        if fk is not None:
            skey = self.keys.to_bytes(fk, wrapper.primary_key)
            if wrapper.instruction in (DELETE_KEY_AND_PROPAGATE, DELETE_KEY_NO_PROPAGATE):
                self.store.delete(skey)
            else:
                self.store.put(skey, _TS.pack(record.timestamp) + self.wser(wrapper))
        self.forward(Record((fk, wrapper.primary_key), (wrapper, record.timestamp), record.timestamp,
                            record.headers))


class SubscriptionJoin(P._Base):
    """Answers one subscription with the right row (Kafka's
    ``SubscriptionJoinProcessorSupplier``), keyed by the primary key, at the later of
    the two rows' timestamps."""

    def __init__(self, getter_factory: Callable[[Any], Callable[[Any], Any]]) -> None:
        self.getter_factory = getter_factory

    def init(self, context: Any) -> None:
        super().init(context)
        self.get = self.getter_factory(context)

    def process(self, record: Record) -> None:
        (fk, pk), (wrapper, ts) = record.key, record.value
        found = None if fk is None else self.get(fk)
        if found is not None and found[1] > ts:
            ts = found[1]
        instruction = wrapper.instruction
        if instruction == DELETE_KEY_NO_PROPAGATE:
            return
        if instruction == DELETE_KEY_AND_PROPAGATE:
            value = None
        elif instruction == PROPAGATE_NULL_IF_NO_FK_VAL_AVAILABLE:
            value = None if found is None else found[0]
        elif found is None:
            return
        else:
            value = found[0]
        self.forward(Record(pk, SubscriptionResponseWrapper(wrapper.hash, value, wrapper.primary_partition), ts,
                            record.headers))


class ForeignTableJoin(_SubscriptionStoreUser):
    """On the right table (Kafka's ``ForeignTableJoinProcessorSupplier``): an update of a
    right row answers every subscription to its key, at the right row's timestamp."""

    def process(self, record: Record) -> None:
        fk = record.key
        if fk is None:
            P._dropped(self.context, "null key in a foreign-key join")
            return
        new = record.value.new_value
        keys = self.keys
        for skey, raw in list(self.store.prefix_scan(keys.prefix(fk))):
            wrapper = self.wde(raw[8:])
            self.forward(Record(keys.primary_key(skey),
                                SubscriptionResponseWrapper(wrapper.hash, new, wrapper.primary_partition),
                                record.timestamp, record.headers))


class ResponseJoin(P._Base):
    """Back on the left side (Kafka's ``ResponseJoinProcessorSupplier``): a response whose
    hash matches the left row's current value is joined (an inner join turns a missing
    right row into a deletion); a stale one is dropped and counted in
    ``dropped-records``, as Kafka 4 counts it."""

    def __init__(self, getter_factory: Callable[[Any], Callable[[Any], Any]], value_serde: Serde,
                 joiner: Callable[[Any, Any], Any], left_join: bool) -> None:
        self.getter_factory = getter_factory
        self.value_ser = value_serde.serialize
        self.joiner = joiner
        self.left_join = left_join

    def init(self, context: Any) -> None:
        super().init(context)
        self.get = self.getter_factory(context)

    def process(self, record: Record) -> None:
        pk, response = record.key, record.value
        found = self.get(pk)
        current = None if found is None else found[0]
        current_hash = None if current is None else murmur3_hash128(self.value_ser(current))
        if response.hash != current_hash:
            # answers a left value that has changed since (Kafka 4 counts it as dropped)
            P._dropped(self.context, "stale foreign-key join response")
            return
        right = response.foreign_value
        if right is None and (not self.left_join or current is None):
            result = None
        else:
            result = self.joiner(current, right)
        self.forward(record.with_value(result))


# ---- building ------------------------------------------------------------------------

def _extractor(fn: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """``fn(value)`` or ``fn(key, value)`` (Kafka 4's ``BiFunction`` extractor)."""
    if not callable(fn):
        raise TopologyError(f"foreign_key_extractor must be callable, got {fn!r}")
    return fn if arity(fn) >= 2 else (lambda k, v: fn(v))


def foreign_key_join(this: Any, other: Any, foreign_key_extractor: Callable[..., Any],
                     joiner: Callable[[Any, Any], Any], named: Any, materialized: Any, table_joined: Any,
                     left_join: bool) -> Any:
    """Add the nodes, stores and internal topics of a foreign-key join of ``this`` (the
    left table) with ``other``; returns the result table.  Names and builder indexes are
    taken in Kafka's order."""
    from .ktable import KTable
    from .state import Stores
    if not isinstance(other, KTable):
        raise TopologyError(f"a foreign-key join joins a KTable with a KTable, got {other!r}")
    if other.builder is not this.builder:
        raise TopologyError("a foreign-key join needs two tables of the same StreamsBuilder")
    if not callable(joiner):
        raise TopologyError(f"joiner must be callable, got {joiner!r}")
    extract = _extractor(foreign_key_extractor)
    tj = table_joined if isinstance(table_joined, TableJoined) else TableJoined()
    base = name_of(named) or tj.name
    b = this.builder
    t = b.topology

    def name(suffix: str, prefix: str) -> str:
        generated = b.new_processor_name(prefix)  # Kafka spends the index even for a named join
        return f"{base}{suffix}" if base else generated

    # the left table sends old values: a changed foreign key must unsubscribe the old one
    this.enable_send_old_values()
    pk_serde = this.store_key_serde()
    left_value_serde = this.store_value_serde()
    fk_serde = other.store_key_serde()
    right_value_serde = other.store_value_serde()
    sub_serde = subscription_serde(pk_serde)
    resp_serde = response_serde(right_value_serde)
    keys = _CombinedKeys(fk_serde, pk_serde)

    sub_topic = name("-subscription-registration", "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-") + "-topic"
    send = name("-subscription-registration-processor", "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-")
    sub_sink = name("-subscription-registration-sink", "KTABLE-SINK-")
    sub_source = name("-subscription-registration-source", "KTABLE-SOURCE-")
    store = name("-subscription-store", "KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-")
    receive = name("-subscription-receive", "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-")
    join_foreign = name("-subscription-join-foreign", "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-")
    foreign_join = name("-foreign-join-subscription", "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-")
    resp_topic = name("-subscription-response", "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-") + "-topic"
    resp_sink = name("-subscription-response-sink", "KTABLE-SINK-")
    resp_source = name("-subscription-response-source", "KTABLE-SOURCE-")
    resolver = name("-subscription-response-resolver", "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER-PROCESSOR-")
    output = name("-result", "KTABLE-FK-JOIN-OUTPUT-")
    m = Materialized.of(materialized)
    # Kafka names the result's store now (spending an index) even when it is not
    # materialised, so a later join that needs the store gets this name
    store_name = m.store_name or b.new_store_name("KTABLE-FK-JOIN-OUTPUT-")

    t.add_processor(send, lambda: SubscriptionSend(extract, fk_serde, left_value_serde, left_join), this.node)
    t.add_sink(sub_sink, sub_topic, send, key_serde=fk_serde, value_serde=sub_serde, partitioner=tj.other_partitioner)
    t.add_source(sub_source, sub_topic, key_serde=fk_serde, value_serde=sub_serde)
    t.repartition_topics[sub_topic] = None
    t.add_processor(receive, lambda: SubscriptionReceive(store, keys, sub_serde), sub_source)
    # the subscription store is of the kind the result's Materialized asks for (Kafka
    # takes its DSL store supplier from there too)
    if m.store_type == "persistent":
        sb = Stores.persistent_key_value_store(store)
    else:
        sb = Stores.in_memory_key_value_store(store)
    t.add_state_store(sb, receive, key_serde=Serdes.bytes(), value_serde=sub_serde, timestamped=True)
    right_get = other.value_getter_factory()
    t.add_processor(join_foreign, lambda: SubscriptionJoin(right_get), receive)
    other.connect_getter_stores(join_foreign)
    t.add_processor(foreign_join, lambda: ForeignTableJoin(store, keys, sub_serde), other.node)
    t.connect_processor_and_state_stores(foreign_join, store)
    t.add_sink(resp_sink, resp_topic, join_foreign, foreign_join, key_serde=pk_serde, value_serde=resp_serde,
               partitioner=_response_partitioner(tj.partitioner))
    t.add_source(resp_source, resp_topic, key_serde=pk_serde, value_serde=resp_serde)
    t.repartition_topics[resp_topic] = None
    # Kafka co-partitions the subscriptions with the right table's topics and the
    # responses with the left one's: each is sized like the sub-topology reading it
    t.copartitioned_topics.update((sub_topic, resp_topic))
    left_get = this.value_getter_factory()
    t.add_processor(resolver, lambda: ResponseJoin(left_get, left_value_serde, joiner, left_join), resp_source)
    this.connect_getter_stores(resolver)

    result = KTable(b, output, this.key_serde, m.value_serde, store_name=None, materialized=m)
    result.is_source = True
    result.pending_store_name = store_name
    t.add_processor(output, lambda: P.TableSource(result), resolver)
    if m.store_name is not None:
        result.materialize()
    return result


def is_foreign_key_join(args: Tuple[Any, ...]) -> bool:
    """``join(other, extractor, joiner, ...)``: two callables where a plain table join
    has one."""
    return len(args) >= 2 and callable(args[0]) and callable(args[1])


__all__ += ["is_foreign_key_join"]
