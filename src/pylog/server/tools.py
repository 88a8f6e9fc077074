"""The ``pylog`` subcommands that run or talk to a server: ``serve``, ``topics``,
``produce``, ``consume``, ``groups``, ``dump-log`` and ``bench``.

Every tool except ``serve``, ``dump-log`` and ``bench --embedded`` speaks the Kafka
protocol to ``--bootstrap-server`` (default ``127.0.0.1:9092``) through
:mod:`pylog.server.wire_client`, so it works against ``pylog serve`` and Apache Kafka
alike.  Output is plain text, one item per line, for people and for ``grep``; errors go
to stderr with exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import struct
import sys
import time
from typing import Any, Iterable, Iterator

__all__ = ["add_commands"]

_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_EARLIEST, _LATEST = -2, -1


def add_commands(sub: Any) -> None:
    """Register the subcommands on ``pylog``'s argparse subparsers."""
    _add_serve(sub)
    _add_topics(sub)
    _add_produce(sub)
    _add_consume(sub)
    _add_groups(sub)
    _add_dump_log(sub)
    from pylog.server import bench

    bench.add_command(sub)


def _bootstrap_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-server", default=_DEFAULT_BOOTSTRAP, metavar="HOST:PORT[,...]",
                   help=f"broker(s) to connect to (default {_DEFAULT_BOOTSTRAP})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer")


def _client(args: argparse.Namespace, client_id: str = "pylog-cli") -> Any:
    from pylog.server.wire_client import WireClient

    return WireClient(args.bootstrap_server, client_id=client_id, timeout=args.timeout)


def _fail(message: str) -> int:
    print(f"pylog: {message}", file=sys.stderr)
    return 1


def _run(fn: Any) -> Any:
    """Wrap a command: pylog errors become one line on stderr and exit status 1."""
    def wrapped(args: argparse.Namespace) -> int:
        from pylog.errors import PylogError

        try:
            return fn(args)
        except PylogError as exc:
            return _fail(f"{type(exc).__name__}: {exc}")
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            # Output piped into head & co: stop quietly.
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
            except OSError:
                pass
            return 0
    return wrapped


def _parse_kv(items: Iterable[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"pylog: {what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


# --------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------


def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve the Kafka wire protocol (any Kafka client can connect)",
        description="Run a single-node Kafka-compatible broker over a pylog data directory.")
    p.add_argument("--data-dir", help="data directory (log.dirs; default ./pylog-data)")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address to listen on (listeners; default 127.0.0.1:9092, port 0 picks one)")
    p.add_argument("--advertised-listener", metavar="HOST:PORT",
                   help="address clients are told to connect to (advertised.listeners; "
                        "default: the listen address)")
    p.add_argument("--config", metavar="FILE", help="a Kafka-style server.properties file")
    p.add_argument("--override", metavar="KEY=VALUE", action="append", default=[],
                   help="set a broker config (Kafka's name), e.g. num.partitions=3; repeatable")
    p.add_argument("--num-partitions", type=int, help="partitions of auto-created topics (num.partitions)")
    p.add_argument("--no-auto-create-topics", action="store_true",
                   help="do not create topics on Metadata/Produce (auto.create.topics.enable=false)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pylog.errors import InvalidConfigError
    from pylog.server.config import ServerConfig, read_properties_file
    from pylog.server.server import configure_logging, run

    configure_logging(args.log_level)
    props: dict[str, Any] = {}
    try:
        if args.config:
            props.update(read_properties_file(args.config))
        for item in args.override:
            key, sep, value = item.partition("=")
            if not sep:
                print(f"pylog serve: --override {item!r}: expected KEY=VALUE", file=sys.stderr)
                return 2
            props[key.strip()] = value.strip()
        if args.data_dir:
            props["log.dirs"] = args.data_dir
        if args.listen:
            props["listeners"] = args.listen
        if args.advertised_listener:
            props["advertised.listeners"] = args.advertised_listener
        if args.num_partitions is not None:
            props["num.partitions"] = args.num_partitions
        if args.no_auto_create_topics:
            props["auto.create.topics.enable"] = "false"
        config = ServerConfig.from_kafka(props)
    except InvalidConfigError as exc:
        print(f"pylog serve: {exc}", file=sys.stderr)
        return 2
    return run(config)


# --------------------------------------------------------------------------------------
# topics
# --------------------------------------------------------------------------------------


def _add_topics(sub: Any) -> None:
    p = sub.add_parser("topics", help="list, create, describe, delete and alter topics")
    tsub = p.add_subparsers(dest="action", required=True)
    ls = tsub.add_parser("list", help="topic names, one per line")
    _bootstrap_arg(ls)
    ls.add_argument("--internal", action="store_true", help="include internal topics")
    ls.set_defaults(func=_run(_topics_list))
    cr = tsub.add_parser("create", help="create a topic")
    _bootstrap_arg(cr)
    cr.add_argument("topic")
    cr.add_argument("--partitions", type=int, default=-1, help="default: the broker's num.partitions")
    cr.add_argument("--replication-factor", type=int, default=-1)
    cr.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="topic config; repeatable")
    cr.add_argument("--if-not-exists", action="store_true")
    cr.set_defaults(func=_run(_topics_create))
    de = tsub.add_parser("describe", help="partitions, offsets and non-default configs")
    _bootstrap_arg(de)
    de.add_argument("topic", nargs="*", help="default: every topic")
    de.add_argument("--all-configs", action="store_true", help="also list configs at their defaults")
    de.set_defaults(func=_run(_topics_describe))
    dl = tsub.add_parser("delete", help="delete topics")
    _bootstrap_arg(dl)
    dl.add_argument("topic", nargs="+")
    dl.set_defaults(func=_run(_topics_delete))
    al = tsub.add_parser("alter", help="add partitions, set or delete configs")
    _bootstrap_arg(al)
    al.add_argument("topic")
    al.add_argument("--partitions", type=int, help="new (larger) partition count")
    al.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="set; repeatable")
    al.add_argument("--delete-config", action="append", default=[], metavar="KEY", help="back to default")
    al.set_defaults(func=_run(_topics_alter))


def _topics_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        md = c.metadata(None)
        for t in sorted(md.topics, key=lambda t: t.name or ""):
            if t.error_code == 0 and (args.internal or not t.is_internal):
                print(t.name)
    return 0


def _topics_create(args: argparse.Namespace) -> int:
    from pylog.errors import TopicAlreadyExistsError

    configs = _parse_kv(args.config, "--config")
    with _client(args) as c:
        try:
            r = c.create_topic(args.topic, args.partitions, args.replication_factor, configs)
        except TopicAlreadyExistsError:
            if args.if_not_exists:
                return 0
            raise
        print(f"Created topic {args.topic} with {r.num_partitions if r.num_partitions > 0 else args.partitions} "
              "partition(s).")
    return 0


def _topics_describe(args: argparse.Namespace) -> int:
    with _client(args) as c:
        md = c.metadata(args.topic or None)
        status = 0
        for t in sorted(md.topics, key=lambda t: t.name or ""):
            if t.error_code:
                from pylog.errors import error_for_code

                print(f"Topic: {t.name}\tError: {error_for_code(t.error_code).kafka_name}", file=sys.stderr)
                status = 1
                continue
            if not args.topic and t.is_internal:
                continue
            configs = c.describe_configs(2, t.name)
            shown = [e for e in configs if args.all_configs or not (e.config_source == 5 or e.is_default)]
            rf = len(t.partitions[0].replica_nodes) if t.partitions else 0
            print(f"Topic: {t.name}\tTopicId: {_topic_id(t.topic_id)}\tPartitionCount: {len(t.partitions)}\t"
                  f"ReplicationFactor: {rf}\tConfigs: "
                  + ",".join(f"{e.name}={e.value}" for e in shown))
            for p in sorted(t.partitions, key=lambda p: p.partition_index):
                start = c.list_offset(t.name, p.partition_index, _EARLIEST)[0]
                end = c.list_offset(t.name, p.partition_index, _LATEST)[0]
                print(f"\tTopic: {t.name}\tPartition: {p.partition_index}\tLeader: {p.leader_id}\t"
                      f"Replicas: {','.join(map(str, p.replica_nodes))}\tIsr: {','.join(map(str, p.isr_nodes))}\t"
                      f"LogStartOffset: {start}\tLogEndOffset: {end}")
    return status


def _topic_id(u: Any) -> str:
    try:
        return base64.urlsafe_b64encode(u.bytes).decode().rstrip("=")
    except AttributeError:
        return str(u)


def _topics_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for name in args.topic:
            c.delete_topic(name)
            print(f"Deleted topic {name}.")
    return 0


def _topics_alter(args: argparse.Namespace) -> int:
    sets = _parse_kv(args.config, "--config")
    if args.partitions is None and not sets and not args.delete_config:
        print("pylog topics alter: give --partitions, --config or --delete-config", file=sys.stderr)
        return 2
    with _client(args) as c:
        if args.partitions is not None:
            c.create_partitions(args.topic, args.partitions)
            print(f"Topic {args.topic} now has {args.partitions} partitions.")
        ops = [(k, 0, v) for k, v in sets.items()] + [(k, 1, None) for k in args.delete_config]
        if ops:
            c.incremental_alter_configs(2, args.topic, ops)
            print(f"Altered configs of {args.topic}: "
                  + ", ".join(f"{k}={v}" if op == 0 else f"{k} (default)" for k, op, v in ops))
    return 0


# --------------------------------------------------------------------------------------
# produce
# --------------------------------------------------------------------------------------


def _add_produce(sub: Any) -> None:
    p = sub.add_parser("produce", help="console producer: one record per input line",
                       description="Read records from stdin (or --file) and produce them.  Formats: "
                                   "'line' (the line is the value; with --key-separator, key SEP value), "
                                   "'json' ({\"key\":..., \"value\":..., \"headers\": {...}, "
                                   "\"partition\": n, \"timestamp\": ms} per line).")
    _bootstrap_arg(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--partition", type=int, help="all records to this partition")
    p.add_argument("--format", choices=("line", "json"), default="line")
    p.add_argument("--key-separator", help="(line format) split each line into key and value at this string")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                   help="(line format) a header on every record; repeatable")
    p.add_argument("--acks", type=int, choices=(-1, 0, 1), default=-1)
    p.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="none")
    p.add_argument("--batch-size", type=int, default=16384, help="bytes per batch (batch.size)")
    p.add_argument("--file", help="read from this file instead of stdin")
    p.set_defaults(func=_run(_produce))


def _records_from_input(args: argparse.Namespace, lines: Iterable[str]) -> Iterator[tuple]:
    """(partition or None, key, value, headers, timestamp or None) per input line."""
    fixed_headers = [(k, v.encode()) for k, v in _parse_kv(args.header, "--header").items()]
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\n").rstrip("\r") if raw.endswith("\n") else raw
        if args.format == "json":
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise SystemExit(f"pylog produce: line {n}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                obj = {"value": obj}
            key = obj.get("key")
            value = obj.get("value")
            headers = obj.get("headers") or {}
            hs = [(str(k), None if v is None else _to_bytes(v)) for k, v in
                  (headers.items() if isinstance(headers, dict) else headers)]
            yield (obj.get("partition"), None if key is None else _to_bytes(key),
                   None if value is None else _to_bytes(value), hs + fixed_headers, obj.get("timestamp"))
        else:
            key = None
            value = line
            if args.key_separator:
                if args.key_separator not in line:
                    raise SystemExit(f"pylog produce: line {n} has no key separator {args.key_separator!r}")
                key, value = line.split(args.key_separator, 1)
            yield (None, None if key is None else key.encode(), value.encode(), fixed_headers, None)


def _to_bytes(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    return json.dumps(v, separators=(",", ":")).encode()


def _produce(args: argparse.Namespace) -> int:
    from pylog._core import partition_for_key
    from pylog.records import RecordBatchBuilder
    from pylog.server.wire_client import produce_on

    stream = open(args.file, encoding="utf-8") if args.file else sys.stdin  # noqa: SIM115
    sent = 0
    with _client(args, "pylog-console-producer") as c:
        leaders = c.partitions(args.topic)
        count = len(leaders)
        if args.partition is not None and args.partition not in leaders:
            return _fail(f"topic {args.topic} has no partition {args.partition}")
        builders: dict[int, Any] = {}
        sticky = 0

        def flush(partition: int) -> None:
            nonlocal sent
            b = builders.pop(partition, None)
            if b is None or not len(b):
                return
            produce_on(c.node(leaders[partition]), args.topic, partition, b.build(), acks=args.acks)
            sent += len(b)

        try:
            for partition, key, value, headers, ts in _records_from_input(args, stream):
                if partition is None:
                    if args.partition is not None:
                        partition = args.partition
                    elif key is not None:
                        partition = partition_for_key(key, count)
                    else:
                        partition = sticky
                if partition not in leaders:
                    return _fail(f"topic {args.topic} has no partition {partition}")
                b = builders.get(partition)
                if b is not None and not b.has_room_for(len(key or b""), len(value or b""), headers):
                    flush(partition)
                    if key is None and args.partition is None:
                        sticky = (sticky + 1) % count
                    b = None
                if b is None:
                    b = builders[partition] = RecordBatchBuilder(compression=args.compression,
                                                                 batch_size=args.batch_size)
                b.append(ts, key, value, headers)
            for partition in list(builders):
                flush(partition)
        finally:
            if stream is not sys.stdin:
                stream.close()
    print(f"Produced {sent} record(s) to {args.topic}.", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------
# consume
# --------------------------------------------------------------------------------------


def _add_consume(sub: Any) -> None:
    p = sub.add_parser("consume", help="console consumer",
                       description="Print records of a topic.  Without --group it reads every partition "
                                   "(or --partition) from --offset; with --group it joins the consumer "
                                   "group and commits what it printed.")
    _bootstrap_arg(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", help="consumer group to join (commits its position)")
    p.add_argument("--partition", type=int)
    p.add_argument("--offset", default=None,
                   help="'earliest', 'latest' or an offset (default: latest, or the group's commit)")
    p.add_argument("--from-beginning", action="store_true", help="same as --offset earliest")
    p.add_argument("--max-messages", type=int, help="exit after this many records")
    p.add_argument("--timeout-ms", type=int, help="exit when no record arrives for this long")
    p.add_argument("--format", choices=("value", "line", "json"), default="value",
                   help="value: the value; line: [key SEP] value with --print-key; json: one object per record")
    p.add_argument("--print-key", action="store_true")
    p.add_argument("--print-headers", action="store_true")
    p.add_argument("--print-offset", action="store_true")
    p.add_argument("--key-separator", default="\t")
    p.add_argument("--assignor", default="range", choices=("range", "roundrobin", "cooperative-sticky"))
    p.set_defaults(func=_run(_consume))


def _format_record(args: argparse.Namespace, topic: str, partition: int, r: Any) -> str:
    if args.format == "json":
        obj: dict[str, Any] = {"topic": topic, "partition": partition, "offset": r.offset,
                               "timestamp": r.timestamp,
                               "key": _text(r.key), "value": _text(r.value)}
        if r.headers:
            obj["headers"] = {k: _text(v) for k, v in r.headers}
        return json.dumps(obj, ensure_ascii=False)
    parts = []
    if args.print_offset:
        parts.append(f"{partition}:{r.offset}")
    if args.print_headers:
        parts.append(",".join(f"{k}:{_text(v)}" for k, v in r.headers) or "NO_HEADERS")
    if args.print_key:
        parts.append("null" if r.key is None else _text(r.key))
    parts.append("null" if r.value is None else _text(r.value))
    return args.key_separator.join(parts)


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    try:
        return bytes(b).decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(b)).decode()


def _consume(args: argparse.Namespace) -> int:
    from pylog.records import iter_batches
    from pylog.server.wire_client import GroupMember, fetch_on

    if args.from_beginning:
        args.offset = "earliest"
    stop = False

    def on_term(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    printed = 0
    out = sys.stdout
    with _client(args, "pylog-console-consumer") as c:
        leaders = c.partitions(args.topic)
        member = None
        positions: dict[int, int] = {}

        def start_position(p: int, committed: int = -1) -> int:
            if args.offset in (None, "latest"):
                if committed >= 0:
                    return committed
                return c.list_offset(args.topic, p, _LATEST)[0]
            if args.offset == "earliest":
                return committed if committed >= 0 else c.list_offset(args.topic, p, _EARLIEST)[0]
            try:
                return int(args.offset)
            except ValueError:
                raise SystemExit(f"pylog consume: --offset {args.offset!r}: use earliest, latest or a number") \
                    from None

        if args.group:
            member = GroupMember(c, args.group, [args.topic], assignor=args.assignor)
        else:
            wanted = [args.partition] if args.partition is not None else sorted(leaders)
            for p in wanted:
                if p not in leaders:
                    return _fail(f"topic {args.topic} has no partition {p}")
                positions[p] = start_position(p)
        last_data = time.monotonic()
        try:
            while not stop:
                if member is not None:
                    was = set(positions)
                    assignment = member.ensure_active().get(args.topic, [])
                    if set(assignment) != was:
                        committed = c.committed(args.group, {args.topic: assignment})
                        positions = {p: start_position(p, committed.get((args.topic, p), -1)) for p in assignment}
                    member.heartbeat_if_due()
                if not positions:
                    time.sleep(0.1)
                    if args.timeout_ms is not None and (time.monotonic() - last_data) * 1000 > args.timeout_ms:
                        break
                    continue
                by_node: dict[int, list] = {}
                for p, off in positions.items():
                    by_node.setdefault(leaders[p], []).append((args.topic, p, off))
                got_any = False
                for node, wanted_tps in by_node.items():
                    results = fetch_on(c.node(node), wanted_tps, max_wait_ms=200, max_bytes=4 << 20,
                                       partition_max_bytes=1 << 20)
                    for (topic, p), pd in results.items():
                        if pd.error_code == 1:          # OFFSET_OUT_OF_RANGE: restart per --offset
                            positions[p] = c.list_offset(topic, p, _EARLIEST if args.offset == "earliest"
                                                         else _LATEST)[0]
                            continue
                        if pd.error_code:
                            from pylog.errors import error_for_code

                            raise error_for_code(pd.error_code, f"fetch {topic}-{p}")
                        data = pd.records
                        if not data:
                            continue
                        for b in iter_batches(memoryview(bytes(data))):
                            if b.is_control:
                                positions[p] = max(positions[p], b.last_offset + 1)
                                continue
                            for r in b:
                                if r.offset < positions[p]:
                                    continue
                                out.write(_format_record(args, topic, p, r) + "\n")
                                printed += 1
                                positions[p] = r.offset + 1
                                got_any = True
                                if args.max_messages is not None and printed >= args.max_messages:
                                    stop = True
                                    break
                            if stop:
                                break
                        if stop:
                            break
                out.flush()
                if got_any:
                    last_data = time.monotonic()
                    if member is not None:
                        member.commit({(args.topic, p): off for p, off in positions.items()})
                elif args.timeout_ms is not None and (time.monotonic() - last_data) * 1000 > args.timeout_ms:
                    break
        finally:
            if member is not None:
                try:
                    if positions and not member.needs_join:
                        member.commit({(args.topic, p): off for p, off in positions.items()})
                finally:
                    member.leave()
    print(f"Processed a total of {printed} messages", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------------------


def _add_groups(sub: Any) -> None:
    p = sub.add_parser("groups", help="list, describe, reset-offsets and delete consumer groups")
    gsub = p.add_subparsers(dest="action", required=True)
    ls = gsub.add_parser("list", help="group ids, one per line")
    _bootstrap_arg(ls)
    ls.add_argument("--state", action="store_true", help="also print each group's state")
    ls.set_defaults(func=_run(_groups_list))
    de = gsub.add_parser("describe", help="members, committed offsets and lag per partition")
    _bootstrap_arg(de)
    de.add_argument("group")
    de.set_defaults(func=_run(_groups_describe))
    rs = gsub.add_parser("reset-offsets", help="move a group's committed offsets (group must be empty)")
    _bootstrap_arg(rs)
    rs.add_argument("group")
    rs.add_argument("--topic", required=True, help="TOPIC or TOPIC:P1,P2")
    how = rs.add_mutually_exclusive_group(required=True)
    how.add_argument("--to-earliest", action="store_true")
    how.add_argument("--to-latest", action="store_true")
    how.add_argument("--to-offset", type=int)
    how.add_argument("--shift-by", type=int)
    how.add_argument("--to-datetime", metavar="MS", type=int, help="first offset at or after this timestamp")
    rs.add_argument("--execute", action="store_true", help="commit the new offsets (default: only show them)")
    rs.set_defaults(func=_run(_groups_reset))
    dl = gsub.add_parser("delete", help="delete empty groups and their offsets")
    _bootstrap_arg(dl)
    dl.add_argument("group", nargs="+")
    dl.set_defaults(func=_run(_groups_delete))


def _groups_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for g in sorted(c.list_groups(), key=lambda g: g.group_id):
            print(f"{g.group_id}\t{g.group_state or '?'}" if args.state else g.group_id)
    return 0


def _lag_rows(c: Any, group: str, topics: Iterable[str] | None = None) -> list[tuple]:
    committed = c.committed(group, None if topics is None else {t: list(c.partitions(t)) for t in topics})
    rows = []
    for (topic, p), off in sorted(committed.items()):
        end = c.list_offset(topic, p, _LATEST)[0]
        rows.append((topic, p, off, end, end - off if off >= 0 else None))
    return rows


def _groups_describe(args: argparse.Namespace) -> int:
    from pylog.broker.consumer_protocol import decode_assignment

    with _client(args) as c:
        g = c.describe_group(args.group)
        if g.group_state == "Dead":
            return _fail(f"consumer group {args.group} does not exist")
        owners: dict[tuple[str, int], tuple[str, str, str]] = {}
        for mem in g.members:
            if g.protocol_type == "consumer" and mem.member_assignment:
                try:
                    a = decode_assignment(mem.member_assignment)
                except Exception:  # noqa: BLE001 - a foreign assignment format: show no owner
                    continue
                for topic, parts in a.partitions.items():
                    for p in parts:
                        owners[(topic, p)] = (mem.member_id, mem.client_host, mem.client_id)
        rows = _lag_rows(c, args.group)
        for key in owners:
            if key not in {(r[0], r[1]) for r in rows}:
                end = c.list_offset(key[0], key[1], _LATEST)[0]
                rows.append((key[0], key[1], -1, end, None))
        print(f"Group: {args.group}\tState: {g.group_state}\tProtocol: {g.protocol_data or '-'}\t"
              f"Members: {len(g.members)}")
        header = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                  "CONSUMER-ID", "HOST", "CLIENT-ID")
        table = [header]
        for topic, p, off, end, lag in sorted(rows):
            member, host, client = owners.get((topic, p), ("-", "-", "-"))
            table.append((args.group, topic, str(p), "-" if off < 0 else str(off), str(end),
                          "-" if lag is None else str(lag), member, host, client))
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for r in table:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _groups_reset(args: argparse.Namespace) -> int:
    topic, _, plist = args.topic.partition(":")
    with _client(args) as c:
        parts = sorted(c.partitions(topic)) if not plist else [int(x) for x in plist.split(",")]
        g = c.describe_group(args.group)
        if g.group_state not in ("Empty", "Dead") and args.execute:
            return _fail(f"group {args.group} is {g.group_state}: stop its consumers before resetting offsets")
        current = c.committed(args.group, {topic: parts})
        new = {}
        for p in parts:
            start = c.list_offset(topic, p, _EARLIEST)[0]
            end = c.list_offset(topic, p, _LATEST)[0]
            if args.to_earliest:
                target = start
            elif args.to_latest:
                target = end
            elif args.to_offset is not None:
                target = args.to_offset
            elif args.to_datetime is not None:
                found = c.list_offset(topic, p, args.to_datetime)[0]
                target = end if found < 0 else found
            else:
                cur = current.get((topic, p), -1)
                target = (cur if cur >= 0 else end) + args.shift_by
            new[(topic, p)] = min(max(target, start), end)
        print("GROUP\tTOPIC\tPARTITION\tNEW-OFFSET")
        for (t, p), off in sorted(new.items()):
            print(f"{args.group}\t{t}\t{p}\t{off}")
        if args.execute:
            c.commit(args.group, new)
        else:
            print("(dry run: add --execute to commit these offsets)", file=sys.stderr)
    return 0


def _groups_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for gid in args.group:
            c.delete_group(gid)
            print(f"Deleted group {gid}.")
    return 0


# --------------------------------------------------------------------------------------
# dump-log
# --------------------------------------------------------------------------------------


def _add_dump_log(sub: Any) -> None:
    p = sub.add_parser("dump-log", help="decode a segment file (.log, .index or .timeindex)")
    p.add_argument("files", nargs="+", metavar="SEGMENT")
    p.add_argument("--print-data", action="store_true", help="print every record (keys, values, headers)")
    p.add_argument("--no-crc-check", action="store_true", help="do not verify batch CRCs")
    p.set_defaults(func=_run(_dump_log))


def _dump_log(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        print(f"Dumping {path}")
        try:
            if path.endswith(".index"):
                _dump_index(path, ">II", lambda base, rel, pos: f"offset: {base + rel} position: {pos}")
            elif path.endswith(".timeindex"):
                _dump_index(path, ">qI", lambda base, ts, rel: f"timestamp: {ts} offset: {base + rel}")
            else:
                status |= _dump_segment(path, args)
        except OSError as exc:
            print(f"pylog dump-log: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
    return status


def _base_offset_of(path: str) -> int:
    stem = os.path.basename(path).split(".", 1)[0]
    return int(stem) if stem.isdigit() else 0


def _dump_index(path: str, fmt: str, show: Any) -> None:
    entry = struct.Struct(fmt)
    base = _base_offset_of(path)
    with open(path, "rb") as f:
        data = f.read()
    time_index = fmt.startswith(">q")
    for pos in range(0, len(data) - entry.size + 1, entry.size):
        a, b = entry.unpack_from(data, pos)
        if a == 0 and b == 0 and (pos or time_index):
            break          # the preallocated, unused tail
        print(show(base, a, b))


def _dump_segment(path: str, args: argparse.Namespace) -> int:
    import mmap

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            print("0 batch(es), 0 bytes")
            return 0
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            count, end, error = _print_batches(mm, args)
        finally:
            mm.close()     # every view into it died with _print_batches' frame
    if error is not None:
        if _all_zero(path, end):
            print(f"{count} batch(es), {end} bytes; the rest of the file ({size - end} bytes) is "
                  "preallocated and unused")
            return 0
        print(f"pylog dump-log: {path}: corrupt batch at byte {end}: {error}", file=sys.stderr)
        return 1
    print(f"{count} batch(es), {end} bytes")
    return 0


def _print_batches(mm: Any, args: argparse.Namespace) -> tuple[int, int, str | None]:
    """Print the batches of a mapped segment; (batches, valid bytes, error or None)."""
    from pylog.errors import PylogError
    from pylog.records import iter_batches

    codecs = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
    it = iter_batches(memoryview(mm), check_crc=not args.no_crc_check)
    count = 0
    try:
        for b in it:
            pos = it.position - b.size
            kind = "LogAppendTime" if b.timestamp_type == "log_append" else "CreateTime"
            valid = "true" if not args.no_crc_check else str(b.crc_matches).lower()
            print(f"baseOffset: {b.base_offset} lastOffset: {b.last_offset} count: {b.records_count} "
                  f"baseSequence: {b.base_sequence} lastSequence: {b.last_sequence} "
                  f"producerId: {b.producer_id} producerEpoch: {b.producer_epoch} "
                  f"partitionLeaderEpoch: {b.partition_leader_epoch} isTransactional: "
                  f"{str(b.is_transactional).lower()} isControl: {str(b.is_control).lower()} "
                  f"position: {pos} {kind}: {b.max_timestamp} size: {b.size} magic: {b.magic} "
                  f"compresscodec: {codecs.get(b.codec, b.codec)} crc: {b.crc} isvalid: {valid}")
            count += 1
            if args.print_data:
                for r in b:
                    hs = ",".join(f"{k}:{_text(v)}" for k, v in r.headers)
                    print(f"| offset: {r.offset} {kind}: {r.timestamp} keySize: "
                          f"{-1 if r.key is None else len(r.key)} valueSize: "
                          f"{-1 if r.value is None else len(r.value)} headerKeys: [{hs}] "
                          f"key: {_text(r.key)} payload: {_text(r.value)}")
    except PylogError as exc:
        return count, it.position, str(exc)
    return count, it.position, None


def _all_zero(path: str, start: int) -> bool:
    """Whether the file holds only zeros from ``start`` (holes of a sparse, preallocated
    segment are skipped without reading them)."""
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = start
        while pos < size:
            try:
                pos = os.lseek(fd, pos, getattr(os, "SEEK_DATA", os.SEEK_SET))
            except OSError:
                return True      # ENXIO: no data after pos
            chunk = os.pread(fd, 1 << 20, pos)
            if not chunk:
                return True
            if chunk.count(0) != len(chunk):
                return False
            pos += len(chunk)
        return True
