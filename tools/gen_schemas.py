#!/usr/bin/env python3
"""Generate pylog's protocol declarations from Kafka's JSON message schemas.

Development-time only: reads ``<schema-dir>/*Request.json`` / ``*Response.json`` (JSON with
``//`` comments) for the APIs in :data:`APIS`, and writes one module per API into
``src/pylog/protocol/schemas/`` plus the registry ``__init__.py``.  The output is
deterministic (same input, same bytes) and is committed, so nothing at build, test or run
time reads the schema directory.

Only facts are carried over: field names (converted to snake_case), types, version ranges,
nullability, tags and defaults.  Descriptions ("about") are not copied.  Fields that exist
in none of the versions pylog speaks are left out.

Usage::

    python tools/gen_schemas.py [--schemas /work/shared/kafka-schemas/clients] [--check]
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "src" / "pylog" / "protocol" / "schemas"
DEFAULT_SCHEMAS = Path("/work/shared/kafka-schemas/clients")

#: (Kafka API name, lowest version, highest version) pylog speaks.  A range wider than the
#: schema's validVersions is capped to it (and reported).
APIS = [
    ("Produce", 3, 9),
    ("Fetch", 4, 12),
    ("ListOffsets", 0, 7),
    ("Metadata", 0, 12),
    ("OffsetCommit", 0, 8),
    ("OffsetFetch", 0, 8),
    ("FindCoordinator", 0, 4),
    ("JoinGroup", 0, 7),
    ("Heartbeat", 0, 4),
    ("LeaveGroup", 0, 4),
    ("SyncGroup", 0, 5),
    ("DescribeGroups", 0, 5),
    ("ListGroups", 0, 5),
    ("SaslHandshake", 0, 1),
    ("ApiVersions", 0, 3),
    ("CreateTopics", 0, 5),
    ("DeleteTopics", 0, 4),
    ("DeleteRecords", 0, 2),
    ("InitProducerId", 0, 5),
    ("OffsetForLeaderEpoch", 0, 3),
    ("AddPartitionsToTxn", 0, 5),
    ("AddOffsetsToTxn", 0, 4),
    ("EndTxn", 0, 4),
    ("WriteTxnMarkers", 0, 1),
    ("TxnOffsetCommit", 0, 4),
    ("DescribeConfigs", 0, 4),
    ("AlterConfigs", 0, 1),
    ("DescribeLogDirs", 0, 4),
    ("CreatePartitions", 0, 2),
    ("DeleteGroups", 0, 2),
    ("IncrementalAlterConfigs", 0, 1),
    ("OffsetDelete", 0, 0),
    ("DescribeCluster", 0, 0),
    ("DescribeProducers", 0, 0),
    ("DescribeTransactions", 0, 0),
    ("ListTransactions", 0, 1),
    # The inter-broker APIs of the ZooKeeper-era controller (pylog.cluster.controller).
    ("LeaderAndIsr", 0, 7),
    ("StopReplica", 0, 4),
    ("UpdateMetadata", 0, 8),
    ("ControlledShutdown", 0, 3),
    ("ElectLeaders", 0, 2),
    ("AlterPartitionReassignments", 0, 0),
    ("ListPartitionReassignments", 0, 0),
    ("AlterPartition", 0, 3),
]

_OPEN = 0x7FFF


def load_json(path: Path) -> dict:
    """Parse Kafka's JSON-with-comments (``//`` to end of line, outside strings)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if c == "\\" and in_str:
                i += 2
                continue
            if c == '"':
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return json.loads("\n".join(out))


def parse_range(text: str) -> tuple[int, int] | None:
    text = text.strip()
    if text == "none":
        return None
    if text.endswith("+"):
        return int(text[:-1]), _OPEN
    if "-" in text:
        low, high = text.split("-", 1)
        return int(low), int(high)
    return int(text), int(text)


def intersects(text: str, low: int, high: int) -> bool:
    r = parse_range(text)
    return r is not None and r[0] <= high and low <= r[1]


def snake_case(name: str) -> str:
    """``ThrottleTimeMs`` -> ``throttle_time_ms``; ``V3AndBelowTopics`` -> ``v3_and_below_topics``."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", s)
    s = s.lower()
    if keyword.iskeyword(s):
        raise SystemExit(f"field name {name} becomes the Python keyword {s!r}")
    return s


def module_name(api: str) -> str:
    return snake_case(api)


def parse_default(field: dict, nullable: bool):
    """The schema's default as a Python literal, or None when it gives none (NO_DEFAULT)."""
    if "default" not in field:
        return None
    raw = field["default"]
    t = field["type"]
    if isinstance(raw, bool):
        return repr(raw)
    raw = str(raw).strip()
    if raw == "null":
        if not nullable:
            raise SystemExit(f"field {field['name']}: default null but never nullable")
        return "None"
    if t in ("int8", "int16", "int32", "int64", "uint16", "uint32"):
        return repr(int(raw, 0))
    if t == "bool":
        if raw not in ("true", "false"):
            raise SystemExit(f"field {field['name']}: bad bool default {raw!r}")
        return repr(raw == "true")
    if t == "float64":
        return repr(float(raw))
    if t == "string":
        return repr(raw)
    if raw == "":
        return None
    raise SystemExit(f"field {field['name']}: unsupported default {raw!r} for {t}")


class Emitter:
    def __init__(self, low: int, high: int, common: dict[str, list]) -> None:
        self.low, self.high = low, high
        self.common = common
        self.used_common: dict[str, None] = {}
        self.struct_names: set[str] = set()

    def fields(self, fields: list, indent: int) -> list[str]:
        lines = []
        for f in fields:
            if not intersects(f["versions"], self.low, self.high):
                continue
            lines.extend(self.field(f, indent))
        return lines

    def field(self, f: dict, indent: int) -> list[str]:
        pad = " " * indent
        name = snake_case(f["name"])
        t = f["type"]
        elem = t[2:] if t.startswith("[]") else t
        args = [repr(name), repr(t), repr(f["versions"])]
        nullable = f.get("nullableVersions", "none")
        is_nullable = intersects(nullable, self.low, self.high)
        if nullable != "none" and is_nullable:
            args.append(f"nullable={nullable!r}")
        if "tag" in f:
            args.append(f"tagged={f.get('taggedVersions', f['versions'])!r}")
            args.append(f"tag={int(f['tag'])}")
        default = parse_default(f, nullable != "none")
        if default is not None:
            args.append(f"default={default}")
        if f.get("ignorable"):
            args.append("ignorable=True")
        if "flexibleVersions" in f:
            raise SystemExit(f"field {f['name']}: per-field flexibleVersions is only "
                             "expected in headers, which pylog declares by hand")
        sub = f.get("fields")
        scalar = elem in ("bool", "int8", "int16", "int32", "int64", "uint16", "uint32",
                          "float64", "string", "bytes", "records", "uuid")
        if scalar:
            if sub:
                raise SystemExit(f"field {f['name']}: scalar type with fields")
            return [f"{pad}F({', '.join(args)}),"]
        if elem in self.struct_names and sub is not None:
            raise SystemExit(f"struct name {elem} declared twice")
        if sub is None:
            if elem not in self.common:
                raise SystemExit(f"field {f['name']}: unknown struct type {elem}")
            self.used_common[elem] = None
            args.append(f"fields={common_const(elem)}")
            return [f"{pad}F({', '.join(args)}),"]
        self.struct_names.add(elem)
        inner = self.fields(sub, indent + 4)
        out = [f"{pad}F({', '.join(args)}, fields=["]
        out.extend(inner)
        out.append(f"{pad}]),")
        return out


def common_const(name: str) -> str:
    return "_" + snake_case(name).upper()


def emit_message(spec: dict, low: int, high: int) -> tuple[list[str], list[str]]:
    """(common struct definitions, message definition lines)."""
    common_src = {c["name"]: c["fields"] for c in spec.get("commonStructs", [])}
    em = Emitter(low, high, common_src)
    body = em.fields(spec["fields"], 8)
    kind = spec["type"]
    const = kind.upper()
    valid = f"{low}-{high}" if low != high else f"{low}"
    lines = [
        f"{const} = Message(",
        f"    {spec['name']!r}, api_key={spec['apiKey']}, kind={kind!r}, valid={valid!r},",
        f"    flexible={spec['flexibleVersions']!r},",
        "    fields=[",
        *body,
        "    ],",
        ")",
    ]
    commons = []
    # Common structs may reference each other; emit dependencies first.
    emitted: set[str] = set()

    def emit_common(name: str) -> None:
        if name in emitted:
            return
        before = set(em.used_common)
        inner = em.fields(common_src[name], 4)
        for dep in em.used_common:
            if dep not in before and dep != name:
                emit_common(dep)
        emitted.add(name)
        commons.extend([f"{common_const(name)} = [", *inner, "]", ""])

    while True:
        pending = [n for n in em.used_common if n not in emitted]
        if not pending:
            break
        for name in pending:
            emit_common(name)
    return commons, lines


def generate(schema_dir: Path) -> tuple[dict[str, str], list[str]]:
    files: dict[str, str] = {}
    notes: list[str] = []
    registry = []
    for api, want_low, want_high in APIS:
        specs = {}
        for kind in ("Request", "Response"):
            path = schema_dir / f"{api}{kind}.json"
            specs[kind] = load_json(path)
        req = specs["Request"]
        valid = parse_range(req["validVersions"])
        low, high = max(want_low, valid[0]), min(want_high, valid[1])
        if (low, high) != (want_low, want_high):
            notes.append(f"{api}: wanted {want_low}-{want_high}, schema lists "
                         f"{req['validVersions']}; capped to {low}-{high}")
        resp_valid = parse_range(specs["Response"]["validVersions"])
        if not (resp_valid[0] <= low and high <= resp_valid[1]):
            raise SystemExit(f"{api}: response validVersions {resp_valid} do not cover {low}-{high}")
        if req["apiKey"] != specs["Response"]["apiKey"]:
            raise SystemExit(f"{api}: request and response api keys differ")
        mod = module_name(api)
        out = [
            f'"""{api} (API key {req["apiKey"]}), versions {low}-{high}.',
            "",
            "Generated by tools/gen_schemas.py from Kafka's message schemas",
            f"({api}Request.json, {api}Response.json; Kafka lists versions {req['validVersions']}).",
            "Do not edit: regenerate.",
            '"""',
            "",
            "from pylog.protocol.schema import Field as F",
            "from pylog.protocol.schema import Message",
            "",
            f"API_KEY = {req['apiKey']}",
            f"NAME = {api!r}",
            "",
        ]
        all_common: list[str] = []
        msg_lines: list[str] = []
        for kind in ("Request", "Response"):
            commons, lines = emit_message(specs[kind], low, high)
            all_common.extend(commons)
            msg_lines.extend(lines)
            msg_lines.append("")
        if all_common:
            out.append("# Structs the schema declares once and uses in several places.")
            out.extend(all_common)
        out.extend(msg_lines)
        files[f"{mod}.py"] = "\n".join(out).rstrip() + "\n"
        flex = parse_range(req["flexibleVersions"])
        registry.append((req["apiKey"], mod, req["name"], specs["Response"]["name"], low, high,
                         None if flex is None else flex[0]))
    registry.sort()
    all_names = {}
    for path in sorted(schema_dir.glob("*Request.json")):
        spec = load_json(path)
        if spec.get("type") == "request" and "apiKey" in spec:
            all_names[int(spec["apiKey"])] = spec["name"][: -len("Request")]
    init = [
        '"""Declarations of every request and response pylog speaks, by API key.',
        "",
        ":data:`APIS` says which APIs and versions pylog speaks without importing their",
        "declarations; each API's module (``REQUEST`` and ``RESPONSE``) is imported on first",
        "use (:func:`pylog.protocol.apis.request_schema`), so a server does not build the",
        "declarations of APIs nobody has called before it listens (#17).  ``MODULES`` (every",
        "module by API key) imports them all on first access.",
        "",
        "Generated by tools/gen_schemas.py. Do not edit: regenerate.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import importlib",
        "from types import ModuleType",
        "",
        "#: Every API key in Kafka's schemas -> its name (for messages about keys pylog",
        "#: does not speak).",
        "KAFKA_API_NAMES = {",
        *[f"    {key}: {name!r}," for key, name in sorted(all_names.items())],
        "}",
        "",
        "#: API key -> (module declaring its REQUEST and RESPONSE, request name, response",
        "#: name, lowest and highest version pylog speaks, first flexible version or None),",
        "#: ascending API key.",
        "APIS: dict[int, tuple[str, str, str, int, int, int | None]] = {",
        *[f"    {key}: {(mod, req, resp, low, high, flex)!r}," for key, mod, req, resp, low, high, flex in registry],
        "}",
        "",
        '__all__ = ["APIS", "KAFKA_API_NAMES", "MODULES"]',
        "",
        "",
        "def __getattr__(name: str) -> dict[int, ModuleType]:",
        '    if name != "MODULES":',
        '        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")',
        "    #: API key -> the module declaring its REQUEST and RESPONSE (ascending API key).",
        '    modules = {key: importlib.import_module(f"{__name__}.{api[0]}") for key, api in APIS.items()}',
        "    globals()[name] = modules",
        "    return modules",
    ]
    files["__init__.py"] = "\n".join(init) + "\n"
    return files, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the committed files differ from what would be generated")
    args = ap.parse_args(argv)
    files, notes = generate(args.schemas)
    for note in notes:
        print("note:", note, file=sys.stderr)
    stale = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        path = args.out / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(files)} files, {len(stale)} {'stale' if args.check else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
