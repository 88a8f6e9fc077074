"""Hypothesis strategies built from pylog's protocol declarations.

``message_strategy(api_key, kind, version)`` draws an instance of the message class whose
every field present at ``version`` holds a random value of its type (nullable fields are
sometimes None, tagged fields sometimes their default so both "sent" and "not sent" are
exercised); fields the version lacks keep their defaults, which is what a decoder
produces, so ``decode(encode(x)) == x`` must hold exactly.  ``strings`` replaces the
strategy of every string field (a server fuzz draws names it has stored data under).
"""

from __future__ import annotations

from hypothesis import strategies as st

from pylog.protocol import messages
from pylog.protocol.apis import request_schema, response_schema
from pylog.protocol.schema import Field, int_range

MAX_ARRAY = 3


def scalar_strategy(type_name: str, flexible: bool, strings: st.SearchStrategy | None = None) -> st.SearchStrategy:
    rng = int_range(type_name)
    if rng is not None:
        return st.integers(rng[0], rng[1])
    if type_name == "bool":
        return st.booleans()
    if type_name == "float64":
        return st.floats(allow_nan=False)
    if type_name == "uuid":
        return st.uuids()
    if type_name == "string":
        return st.text(max_size=12) if strings is None else strings
    if type_name == "bytes":
        return st.binary(max_size=24)
    if type_name == "records":
        # Mostly small (copied into the output), sometimes large (passed as a segment);
        # large ones repeat a short pattern, which is far cheaper for hypothesis to draw.
        large = st.tuples(st.binary(min_size=1, max_size=8), st.integers(4096, 4200)).map(
            lambda t: (t[0] * (t[1] // len(t[0]) + 1))[:t[1]])
        return st.one_of(st.binary(max_size=48), large)
    raise ValueError(type_name)


def value_strategy(f: Field, version: int, flexible: bool, strings=None) -> st.SearchStrategy:
    if f.is_array:
        if f.is_struct:
            elem = struct_strategy(f.fields, f.cls, version, flexible, strings)
        else:
            elem = scalar_strategy(f.element, flexible, strings)
        s = st.lists(elem, max_size=MAX_ARRAY)
    elif f.is_struct:
        s = struct_strategy(f.fields, f.cls, version, flexible, strings)
    else:
        s = scalar_strategy(f.type, flexible, strings)
    if version in f.nullable:
        s = st.one_of(st.none(), s)
    if version in f.tagged:
        s = st.one_of(st.just(f.default_value()), s)
    return s


def struct_strategy(fields, cls, version: int, flexible: bool, strings=None) -> st.SearchStrategy:
    kwargs = {f.name: value_strategy(f, version, flexible, strings)
              for f in fields if version in f.versions}
    return st.fixed_dictionaries(kwargs).map(lambda kw: cls(**kw))


def message_strategy(api_key: int, kind: str, version: int,
                     strings: st.SearchStrategy | None = None) -> st.SearchStrategy:
    schema = request_schema(api_key) if kind == "request" else response_schema(api_key)
    cls = messages.class_for(schema)
    return struct_strategy(schema.fields, cls, version, schema.is_flexible(version), strings)


def all_versions():
    """Every (api_key, kind, version) pylog speaks, for parametrisation."""
    from pylog.protocol import supported_versions

    out = []
    for key, (lo, hi) in supported_versions().items():
        for v in range(lo, hi + 1):
            for kind in ("request", "response"):
                out.append((key, kind, v))
    return out
