"""Differential tests against kafka-python's two independent protocol implementations.

- ``kafka.protocol.old.*``: the hand-written Struct classes of kafka-python 2.x (what was
  ``kafka.protocol.produce``/``fetch``), for the non-flexible versions they cover.
- kafka-python 3.x's classes generated from Kafka's JSON schemas (all versions).

For random messages (drawn from pylog's declarations): pylog's bytes decode in
kafka-python to the same values, and kafka-python, given the same values, encodes the
same bytes, which pylog decodes back to the original message.  Fields are matched by
position among the fields a version puts on the wire (kafka-python renames a few, e.g.
``TopicAuthorizedOperations``), tagged fields by tag.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import pytest
from _protocol_strategies import message_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog import protocol
from pylog.protocol.apis import api_name, request_schema, response_schema, supported_versions

# kafka-python's import emits DeprecationWarnings (importlib.resources.read_text); they
# are about the oracle, not pylog.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.protocol.api_message as kafka_api_message
    import kafka.protocol.old.api as old_api
    import kafka.protocol.old.types as old_types

SUPPORTED = supported_versions()


def _schema(key, kind):
    return request_schema(key) if kind == "request" else response_schema(key)


def _encode(kind, key, version, obj) -> bytes:
    enc = protocol.encode_request_body if kind == "request" else protocol.encode_response_body
    return b"".join(enc(key, version, obj))


def _decode(kind, key, version, buf):
    dec = protocol.decode_request_body if kind == "request" else protocol.decode_response_body
    return dec(key, version, buf)


def _bits_to_int(value) -> int:
    """kafka-python decodes authorized-operations int32 fields to a set of bit numbers
    (None for the INT32_MIN "not requested" sentinel)."""
    if value is None:
        return -(1 << 31)
    n = sum(1 << b for b in value)
    return n - (1 << 32) if n >= 1 << 31 else n


def _int_to_bits(value: int) -> set[int]:
    u = value & 0xFFFFFFFF
    return {i for i in range(32) if u >> i & 1}


def _same_scalar(f, ours, theirs, bitfield: bool) -> bool:
    if bitfield:
        return ours == _bits_to_int(theirs)
    if f.element in ("bytes", "records") and ours is not None and theirs is not None:
        return bytes(ours) == bytes(theirs)
    return ours == theirs and type(ours) is type(theirs) or (ours == theirs and ours is not None)


def _ours_wire_fields(fields, version):
    return [f for f in fields if version in f.versions and version not in f.tagged]


# --------------------------------------------------------------------------------------
# kafka-python 2.x hand-written classes
# --------------------------------------------------------------------------------------


#: kafka-python 2.x classes that disagree with Kafka's own schema, left out of the
#: comparison (the 3.x classes generated from the schemas are compared below):
#: - DescribeLogDirsRequest_v0 declares ``partitions`` as one int32; Kafka's schema (and
#:   every broker) has an array of int32.
_OLD_WRONG = {(35, "request", 0)}


def _old_classes():
    found = {}
    pkg = importlib.import_module("kafka.protocol.old")
    for mi in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"kafka.protocol.old.{mi.name}")
        for name in dir(mod):
            c = getattr(mod, name)
            if not (isinstance(c, type) and issubclass(c, (old_api.Request, old_api.Response))):
                continue
            key, version = getattr(c, "API_KEY", None), getattr(c, "API_VERSION", None)
            if not isinstance(key, int) or not isinstance(version, int):
                continue
            kind = "request" if issubclass(c, old_api.Request) else "response"
            lo_hi = SUPPORTED.get(key)
            if lo_hi is None or not lo_hi[0] <= version <= lo_hi[1]:
                continue
            if _schema(key, kind).is_flexible(version):
                continue  # flexible versions: compared with the 3.x classes below
            if (key, kind, version) in _OLD_WRONG:
                continue
            found[(key, kind, version)] = c
    return found


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    OLD = _old_classes()
OLD_IDS = [f"{api_name(k)}{kind.capitalize()}-v{v}" for k, kind, v in sorted(OLD)]


def _flattened(fields, version, schema) -> bool:
    """kafka-python 2.x writes an array of one-field structs as an array of that field
    (Metadata v0 topics are ``Array(String)``)."""
    return not isinstance(schema, old_types.Schema) and \
        len(_ours_wire_fields(fields, version)) == 1


def _old_check(fields, version, obj, schema, value, path):
    if _flattened(fields, version, schema):
        schema, value = old_types.Schema(("value", schema)), (value,)
    vals = list(value) if isinstance(value, tuple) else [getattr(value, n) for n in schema.names]
    types, vals = _inline(schema.fields, vals)
    ours_fields = _ours_wire_fields(fields, version)
    assert len(ours_fields) == len(types), f"{path}: field counts differ"
    for f, t, theirs in zip(ours_fields, types, vals):
        ours = getattr(obj, f.name)
        p = f"{path}.{f.name}"
        if f.is_array:
            if ours is None:
                assert theirs is None, p
                continue
            assert len(ours) == len(theirs), p
            for i, (a, b) in enumerate(zip(ours, theirs)):
                if f.is_struct:
                    _old_check(f.fields, version, a, t.array_of, b, f"{p}[{i}]")
                else:
                    assert _same_scalar(f, a, b, False), f"{p}[{i}]: {a!r} != {b!r}"
        else:
            bitfield = type(t).__name__ == "BitField" or t is old_types.BitField
            assert _same_scalar(f, ours, theirs, bitfield), f"{p}: {ours!r} != {theirs!r}"


def _inline(types, vals):
    """Splice nested non-array Schemas (kafka-python 2.x groups CreatePartitions'
    count and assignment that way; the bytes are the same) into one flat list."""
    flat_t, flat_v = [], []
    for t, v in zip(types, vals):
        if isinstance(t, old_types.Schema):
            sub_t, sub_v = _inline(t.fields, list(v))
            flat_t += sub_t
            flat_v += sub_v
        else:
            flat_t.append(t)
            flat_v.append(v)
    return flat_t, flat_v


def _regroup(types, flat):
    """The inverse of _inline: rebuild nested tuples from a flat value list."""
    out = []
    for t in types:
        if isinstance(t, old_types.Schema):
            out.append(tuple(_regroup(t.fields, flat)))
        else:
            out.append(flat.pop(0))
    return out


def _to_old(fields, version, obj, schema):
    if _flattened(fields, version, schema):
        return _to_old(fields, version, obj, old_types.Schema(("value", schema)))[0]
    flat_types = _flat_types(schema.fields)
    out = []
    for f, t in zip(_ours_wire_fields(fields, version), flat_types):
        v = getattr(obj, f.name)
        if f.is_array and f.is_struct and v is not None:
            v = [_to_old(f.fields, version, x, t.array_of) for x in v]
            v = [tuple(x) if isinstance(x, list) else x for x in v]
        elif type(t).__name__ == "BitField" or t is old_types.BitField:
            v = _int_to_bits(v)
        elif f.element in ("bytes", "records") and v is not None:
            v = bytes(v)
        out.append(v)
    return _regroup(schema.fields, out)


def _flat_types(types):
    flat = []
    for t in types:
        flat += _flat_types(t.fields) if isinstance(t, old_types.Schema) else [t]
    return flat


@pytest.mark.parametrize(("key", "kind", "version"), sorted(OLD), ids=OLD_IDS)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_legacy_kafka_python_agrees(key, kind, version, data):
    cls = OLD[(key, kind, version)]
    schema = _schema(key, kind)
    obj = data.draw(message_strategy(key, kind, version))
    if key == 18 and kind == "response":
        # kafka-python 2.x reads any ApiVersions response with an error as v0 (a client
        # heuristic for KIP-511), so only error-free ones are comparable.
        obj.error_code = 0
    ours = _encode(kind, key, version, obj)
    theirs = cls.decode(ours)
    _old_check(schema.fields, version, obj, cls.SCHEMA, theirs, schema.name)
    built = cls(*_to_old(schema.fields, version, obj, cls.SCHEMA))
    theirs_bytes = bytes(built.encode())
    assert theirs_bytes == ours
    assert _decode(kind, key, version, theirs_bytes) == obj


# --------------------------------------------------------------------------------------
# kafka-python 3.x schema-generated classes
# --------------------------------------------------------------------------------------


def _new_classes():
    found = {}
    for sub in ("admin", "consumer", "metadata", "producer"):
        pkg = importlib.import_module(f"kafka.protocol.{sub}")
        mods = [importlib.import_module(f"kafka.protocol.{sub}.{mi.name}")
                for mi in pkgutil.iter_modules(pkg.__path__)]
        for mod in mods:
            _collect(mod, found)
    _collect(importlib.import_module("kafka.protocol.sasl"), found)
    return found


def _collect(mod, found):
    base = kafka_api_message.ApiMessage
    for name in dir(mod):
        c = getattr(mod, name)
        if (isinstance(c, type) and issubclass(c, base) and c is not base
                and getattr(c, "_class_version", 1) is None):
            try:
                key, kind = c.API_KEY, c.type
            except Exception:  # abstract helpers without a schema
                continue
            lo_hi = SUPPORTED.get(key)
            if lo_hi is None:
                continue
            for v in range(lo_hi[0], min(lo_hi[1], c.max_version) + 1):
                found[(key, kind, v)] = c


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    NEW = _new_classes()
NEW_IDS = [f"{api_name(k)}{kind.capitalize()}-v{v}" for k, kind, v in sorted(NEW)]


def _kp_split(kp_fields, version):
    present = [f for f in kp_fields if f.for_version_q(version)]
    untagged = [f for f in present if not f.tagged_field_q(version)]
    tagged = {f.tag: f for f in present if f.tagged_field_q(version)}
    return untagged, tagged


def _kp_is_bitfield(kf) -> bool:
    return type(getattr(kf, "_type", None)).__name__ == "type" and \
        getattr(kf, "_type").__name__ == "BitField"


def _new_pairs(fields, version, kp_fields):
    untagged, tagged = _kp_split(kp_fields, version)
    ours = _ours_wire_fields(fields, version)
    assert len(ours) == len(untagged), \
        f"field counts differ: {[f.name for f in ours]} vs {[f.name for f in untagged]}"
    pairs = list(zip(ours, untagged))
    for f in fields:
        if version in f.versions and version in f.tagged:
            pairs.append((f, tagged[f.tag]))
    return pairs


def _new_check(fields, version, obj, kp_fields, kp_obj, path):
    for f, kf in _new_pairs(fields, version, kp_fields):
        ours, theirs = getattr(obj, f.name), getattr(kp_obj, kf.name)
        p = f"{path}.{f.name}"
        if version in f.tagged and theirs is None and ours == f.default_value():
            continue  # kafka-python leaves an absent tagged struct as None
        if f.is_array:
            if ours is None:
                assert theirs is None, p
                continue
            assert len(ours) == len(theirs), p
            for i, (a, b) in enumerate(zip(ours, theirs)):
                if f.is_struct:
                    _new_check(f.fields, version, a, kf._fields, b, f"{p}[{i}]")
                else:
                    assert _same_scalar(f, a, b, False), f"{p}[{i}]: {a!r} != {b!r}"
        elif f.is_struct:
            if ours is None:
                assert theirs is None, p
            else:
                _new_check(f.fields, version, ours, kf._fields, theirs, p)
        else:
            assert _same_scalar(f, ours, theirs, _kp_is_bitfield(kf)), f"{p}: {ours!r} != {theirs!r}"


def _to_new(fields, version, obj, kp_fields, make):
    kwargs = {}
    for f, kf in _new_pairs(fields, version, kp_fields):
        v = getattr(obj, f.name)
        if version in f.tagged and v == f.default_value():
            continue  # not sent
        if f.is_struct and v is not None:
            # kafka-python hangs nested data classes on their parent class by type name.
            child = kf.data_class or getattr(make, kf.type_str)
            if f.is_array:
                v = [_to_new(f.fields, version, x, kf._fields, child) for x in v]
            else:
                v = _to_new(f.fields, version, v, kf._fields, child)
        elif _kp_is_bitfield(kf):
            v = None if v == -(1 << 31) else _int_to_bits(v)
        elif f.element in ("bytes", "records") and v is not None:
            v = bytes(v)
        kwargs[kf.name] = v
    return make(**kwargs)


@pytest.mark.parametrize(("key", "kind", "version"), sorted(NEW), ids=NEW_IDS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kafka_python_agrees(key, kind, version, data):
    cls = NEW[(key, kind, version)][version]
    schema = _schema(key, kind)
    obj = data.draw(message_strategy(key, kind, version))
    if key == 18 and kind == "response":
        obj.error_code = 0  # see test_legacy_kafka_python_agrees
    ours = _encode(kind, key, version, obj)
    theirs = cls.decode(ours)
    _new_check(schema.fields, version, obj, cls._struct._fields, theirs, schema.name)
    built = _to_new(schema.fields, version, obj, cls._struct._fields, cls)
    theirs_bytes = bytes(built.encode())
    assert theirs_bytes == ours
    assert _decode(kind, key, version, theirs_bytes) == obj


# The controller-to-broker APIs (LeaderAndIsr, StopReplica, UpdateMetadata,
# ControlledShutdown, AlterPartition): kafka-python, a client, has no classes for them;
# their declarations come from Kafka's JSON by tools/gen_schemas.py like every other.
INTER_BROKER_ONLY = {4, 5, 6, 7, 56}


def test_every_api_is_checked_against_an_independent_implementation():
    covered = {k for k, _, _ in NEW} | {k for k, _, _ in OLD}
    assert covered == set(SUPPORTED) - INTER_BROKER_ONLY
    assert len({(k, v) for k, _, v in OLD}) >= 60  # the hand-written classes cover many


@pytest.mark.long
@pytest.mark.parametrize(("key", "kind", "version"), sorted(NEW), ids=NEW_IDS)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_kafka_python_agrees_long(key, kind, version, data):
    test_kafka_python_agrees.hypothesis.inner_test(key, kind, version, data)


@pytest.mark.long
@pytest.mark.parametrize(("key", "kind", "version"), sorted(OLD), ids=OLD_IDS)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_legacy_kafka_python_agrees_long(key, kind, version, data):
    test_legacy_kafka_python_agrees.hypothesis.inner_test(key, kind, version, data)
