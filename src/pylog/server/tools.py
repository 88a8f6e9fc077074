"""The ``pylog`` subcommands that run or talk to a server: ``serve``, ``topics``,
``produce``, ``consume``, ``groups``, ``transactions``, ``dump-log`` and ``bench``.

Every tool except ``serve``, ``dump-log`` and ``bench --embedded`` speaks the Kafka
protocol to ``--bootstrap-server`` (default ``127.0.0.1:9092``) through pylog's own
client, ``pylog.connect`` (its admin calls, :class:`~pylog.client.producer.Producer` and
:class:`~pylog.client.consumer.Consumer`), so it works against ``pylog serve``, a pylog
cluster and Apache Kafka alike.  A bootstrap server that refuses the connection is
reported at once (:func:`pylog.client.kafka.bootstrap.wait_for_bootstrap`), not after
``--timeout``.  Output is plain text, one item per line, for people and for ``grep``.

Errors are one line on stderr, ``pylog: <message>``, with the message Kafka's tools
show (never a Python class name or a traceback); the exit status is 2 for bad usage
(an argument of the wrong type or range, detected before anything is done) and 1 for an
operation that failed.  Every argument is checked by the type functions below
(:func:`int_in`, :func:`timeout_seconds`, :func:`bootstrap_servers`, :func:`topic_name`,
...) so that a bad value is a usage error, not an exception deep in a codec.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, BinaryIO, Callable, Iterable, Iterator

__all__ = ["add_commands", "CommandError", "describe_error", "int_in", "float_in", "timeout_seconds",
           "bootstrap_servers", "topic_name", "datetime_ms", "log_level", "common_options"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT = 30.0
INT16_MAX, INT32_MAX, INT64_MAX = 2**15 - 1, 2**31 - 1, 2**63 - 1
#: Kafka's topic name rule (Topic.java): ASCII alphanumerics, '.', '_', '-'; at most 249.
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_TOPIC_MAX = 249
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class CommandError(Exception):
    """A failure a command reports as one line, ``pylog: <message>``.

    ``status`` is the exit status: 1 (the operation failed, the default) or 2 (bad usage).
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


#: The messages Kafka's clients show for an error code (Errors.java), used when a broker
#: answered with a bare code and no error_message.
_KAFKA_MESSAGES = {
    -1: "The server experienced an unexpected error when processing the request.",
    1: "The requested offset is not within the range of offsets maintained by the server.",
    2: "This message has failed its CRC checksum, exceeds the valid size, has a null key for a "
       "compacted topic, or is otherwise corrupt.",
    3: "This server does not host this topic-partition.",
    5: "There is no leader for this topic-partition as we are in the middle of a leadership election.",
    6: "This server is not the leader for that topic-partition.",
    7: "The request timed out.",
    10: "The request included a message larger than the max message size the server will accept.",
    14: "The coordinator is loading and hence can't process requests.",
    15: "The coordinator is not available.",
    16: "This is not the correct coordinator.",
    17: "The request attempted to perform an operation on an invalid topic.",
    19: "Messages are rejected since there are fewer in-sync replicas than required.",
    24: "The configured groupId is invalid.",
    25: "The coordinator is not aware of this member.",
    35: "The version of API is not supported.",
    36: "Topic with this name already exists.",
    37: "Number of partitions is below 1.",
    38: "Replication factor is below 1 or larger than the number of available brokers.",
    40: "Configuration is invalid.",
    42: "This most likely occurs because of a request being malformed by the client library or the "
        "message was sent to an incompatible broker. See the broker logs for more details.",
    56: "Disk error when trying to access log file on the disk.",
    68: "The group is not empty.",
    69: "The group id does not exist.",
    87: "The record was rejected.",
}


def describe_error(exc: BaseException) -> str:
    """The one-line message for ``exc`` as Kafka's tools word it: the error's message,
    with a bare Kafka error name (``UNKNOWN_TOPIC_OR_PARTITION``) replaced by Kafka's
    description of it.  Never the Python class name."""
    from pylog.errors import PylogError

    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, PylogError):
        msg = str(exc)
        text = _KAFKA_MESSAGES.get(exc.error_code)
        if text is not None:
            if not msg or msg == exc.kafka_name:
                return text
            if msg.endswith(": " + exc.kafka_name):
                return msg[: -len(exc.kafka_name)] + text
        return msg or exc.kafka_name
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        if exc.filename is not None:
            return f"{os.fsdecode(exc.filename)}: {what}"
        return what
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------
# argument types: a bad value is a usage error (exit 2) with a message, never a traceback
# --------------------------------------------------------------------------------------


def int_in(lo: int | None = None, hi: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if lo is not None and value < lo or hi is not None and value > hi:
            if hi is None:
                raise argparse.ArgumentTypeError(f"{value} is out of range: it must be at least {lo}")
            if lo is None:
                raise argparse.ArgumentTypeError(f"{value} is out of range: it must be at most {hi}")
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be in [{lo}, {hi}]")
        return value
    parse.__name__ = "int"
    return parse


def float_in(lo: float, hi: float, *, lo_open: bool = False, what: str = "a number") -> Callable[[str], float]:
    """An argparse type: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            bound = f"greater than {lo:.15g}" if lo_open else f"at least {lo:.15g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be {bound} and at most {hi:.15g}")
        return value
    parse.__name__ = "float"
    return parse


#: --timeout: seconds, more than 0 (0 would make the socket non-blocking) and small
#: enough that it fits the protocol's int32 timeout_ms fields.
timeout_seconds = float_in(0.0, INT32_MAX // 1000, lo_open=True, what="a number of seconds")


def bootstrap_servers(text: str) -> str:
    """An argparse type: ``HOST:PORT[,HOST:PORT...]`` with ports in 1..65535."""
    from pylog.client.kafka.cluster import parse_bootstrap_servers

    for part in text.split(","):
        if part.strip() and ":" not in part.strip().split("://")[-1]:
            raise argparse.ArgumentTypeError(f"{_printable(text)!r}: invalid url in bootstrap.servers: "
                                             f"{_printable(part.strip())} (expected HOST:PORT)")
    try:
        servers = parse_bootstrap_servers(text)
    except ValueError as exc:          # InvalidConfigError: no host, a port that is not 1..65535
        raise argparse.ArgumentTypeError(
            f"{_printable(text)!r}: expected HOST:PORT[,HOST:PORT...], e.g. {DEFAULT_BOOTSTRAP} "
            f"({_printable(str(exc))})") from None
    for host, _port in servers:
        try:
            host.encode("idna" if not host.isascii() else "ascii")
        except UnicodeError:
            raise argparse.ArgumentTypeError(f"{text!r}: {host!r} is not a host name") from None
    return text


def topic_name(text: str) -> str:
    """An argparse type: a legal Kafka topic name (Kafka's tools check this too)."""
    if text in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"topic name {text!r} is illegal, it cannot be empty, '.' or '..'")
    if len(text) > _TOPIC_MAX:
        raise argparse.ArgumentTypeError(
            f"topic name is illegal, it can't be longer than {_TOPIC_MAX} characters, topic name: {text[:40]}...")
    if not set(text) <= _TOPIC_CHARS:
        raise argparse.ArgumentTypeError(
            f"topic name {_printable(text)!r} is illegal, it contains a character other than ASCII "
            "alphanumerics, '.', '_' and '-'")
    return text


def topic_partitions(text: str) -> tuple[str, list[int] | None]:
    """An argparse type: ``TOPIC`` or ``TOPIC:P1,P2`` (kafka-consumer-groups' --topic)."""
    name, sep, plist = text.partition(":")
    topic_name(name)
    if not sep:
        return name, None
    parts = []
    for item in plist.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) > INT32_MAX:
            raise argparse.ArgumentTypeError(
                f"{_printable(text)!r}: partition {_printable(item)!r} is not a partition number "
                "(expected TOPIC or TOPIC:P1,P2)")
        parts.append(int(item))
    return name, sorted(set(parts))


def datetime_ms(text: str) -> int:
    """An argparse type: a time as epoch milliseconds or ISO 8601
    (``2024-05-01T12:00:00.000``, with ``Z`` or ``+02:00``; no zone: local time), as
    kafka-consumer-groups' --to-datetime takes it."""
    t = text.strip()
    if t.isdigit():
        value = int(t)
    else:
        iso = t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t
        import datetime  # imported on first use: not on the start-up path of `pylog serve` (#17)

        try:
            dt = datetime.datetime.fromisoformat(iso)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{_printable(text)!r} is not a time: give epoch milliseconds or ISO 8601, "
                "e.g. 2024-05-01T12:00:00.000 (local time) or 2024-05-01T12:00:00Z") from None
        try:
            value = int(dt.timestamp() * 1000) if dt.tzinfo else int(dt.astimezone().timestamp() * 1000)
        except (OverflowError, OSError, ValueError):
            raise argparse.ArgumentTypeError(f"{_printable(text)!r} is out of range") from None
    if not 0 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{_printable(text)!r} is out of range: a time from 1970 on")
    return value


def log_level(text: str) -> str:
    """An argparse type: one of :data:`LOG_LEVELS` (any case; log4j's WARN and TRACE too)."""
    level = {"WARN": "WARNING", "TRACE": "DEBUG", "FATAL": "CRITICAL"}.get(text.upper(), text.upper())
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{_printable(text)!r}: expected one of {', '.join(LOG_LEVELS)}")
    return level


def offset_spec(text: str) -> str | int:
    """An argparse type for consume's --offset: ``earliest``, ``latest`` or an offset >= 0."""
    t = text.strip().lower()
    if t in ("earliest", "latest"):
        return t
    if t.isdigit() and int(t) <= INT64_MAX:
        return int(t)
    raise argparse.ArgumentTypeError(
        f"the provided offset value {_printable(text)!r} is incorrect. Valid values are 'earliest', "
        "'latest', or a non-negative long")


def _printable(text: str) -> str:
    """``text`` as it can be printed (argv bytes that are not UTF-8 come as surrogates)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def common_options(p: argparse.ArgumentParser, *, connects: bool) -> None:
    """The options every leaf command takes, also accepted before the subcommand
    (``pylog --bootstrap-server H:P topics list``): their defaults are filled in by
    :func:`pylog.cli.main`, so a value given in either position survives argparse."""
    if connects:
        p.add_argument("--bootstrap-server", type=bootstrap_servers, default=argparse.SUPPRESS,
                       metavar="HOST:PORT[,...]", help=f"broker(s) to connect to (default {DEFAULT_BOOTSTRAP})")
        p.add_argument("--timeout", type=timeout_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                       help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--log-level", type=log_level, default=argparse.SUPPRESS, metavar="LEVEL",
                   help="DEBUG, INFO, WARNING or ERROR (default INFO for serve, WARNING otherwise)")
    p.set_defaults(connects=connects)


def add_commands(sub: Any) -> None:
    """Register the subcommands on ``pylog``'s argparse subparsers."""
    _add_serve(sub)
    _add_topics(sub)
    _add_produce(sub)
    _add_consume(sub)
    _add_groups(sub)
    _add_transactions(sub)
    _add_dump_log(sub)
    from pylog.server import bench

    bench.add_command(sub)


def connect(bootstrap: str, timeout: float, client_id: str = "pylog-cli") -> Any:
    """A ``pylog.connect`` client for a tool: requests wait up to ``timeout`` seconds, and
    a cluster that cannot be reached is an error at once (NetworkError), not after the
    timeout.  The caller closes it."""
    import pylog
    from pylog.client.kafka.bootstrap import wait_for_bootstrap

    client = pylog.connect(bootstrap, client_id=client_id, request_timeout_ms=max(1, int(timeout * 1000)))
    try:
        wait_for_bootstrap(client, timeout)
    except BaseException:
        client.close()
        raise
    return client


def _client(args: argparse.Namespace, client_id: str = "pylog-cli") -> Any:
    return connect(args.bootstrap_server, args.timeout, client_id)


def _warn(message: str) -> None:
    print(f"pylog: {message}", file=sys.stderr)


def _fail(message: str) -> int:
    _warn(message)
    return 1


def _parse_kv(items: Iterable[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"{what} {_printable(item)!r}: expected KEY=VALUE", 2)
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
    p.add_argument("--num-partitions", type=int_in(1, INT32_MAX),
                   help="partitions of auto-created topics (num.partitions)")
    p.add_argument("--no-auto-create-topics", action="store_true",
                   help="do not create topics on Metadata/Produce (auto.create.topics.enable=false)")
    p.add_argument("--node-id", type=int_in(0, INT32_MAX), help="this broker's id (broker.id / node.id)")
    p.add_argument("--zookeeper", metavar="HOST:PORT[/CHROOT]",
                   help="join the cluster coordinated by this ZooKeeper (zookeeper.connect)")
    common_options(p, connects=False)
    p.set_defaults(func=_serve, bytes_args=("data_dir", "config"))


def _serve(args: argparse.Namespace) -> int:
    from pylog.server.config import ServerConfig, read_properties_file
    from pylog.server.server import configure_logging, run

    configure_logging(args.log_level or "INFO")
    props: dict[str, Any] = {}
    try:
        if args.config:
            props.update(read_properties_file(args.config))
        for item in args.override:
            key, sep, value = item.partition("=")
            if not sep:
                print(f"pylog serve: --override {_printable(item)!r}: expected KEY=VALUE", file=sys.stderr)
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
        if args.node_id is not None:
            props["node.id"] = args.node_id
        if args.zookeeper:
            props["zookeeper.connect"] = args.zookeeper
        config = ServerConfig.from_kafka(props)
    except ValueError as exc:      # InvalidConfigError, or a config file that is not UTF-8
        print(f"pylog serve: {describe_error(exc)}", file=sys.stderr)
        return 2
    # Nothing is created before the arguments are known to work: a data directory that
    # is a file, or a port in use, is reported before the data directory is made.
    data_dir = config.log_dirs
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        print(f"pylog serve: log.dirs {_printable(os.fsdecode(data_dir))!r} is not a directory",
              file=sys.stderr)
        return 2
    problem = _cannot_listen(*config.listen_address)
    if problem is not None:
        print(f"pylog serve: {problem}", file=sys.stderr)
        return 1
    on_listening = getattr(args, "on_listening", None)
    return run(config, ready=None if on_listening is None else lambda server: on_listening())


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not bind ``host:port`` (None if it can), tried with the
    options the server binds with (SO_REUSEADDR), the socket closed again at once."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except (OSError, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot listen on {_printable(host)}:{port}: {why}"
    return None


# --------------------------------------------------------------------------------------
# topics
# --------------------------------------------------------------------------------------


def _add_topics(sub: Any) -> None:
    p = sub.add_parser("topics", help="list, create, describe, delete and alter topics")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = tsub.add_parser("list", help="topic names, one per line")
    common_options(ls, connects=True)
    ls.add_argument("--internal", action="store_true", help="include internal topics")
    ls.set_defaults(func=_topics_list)
    cr = tsub.add_parser("create", help="create a topic")
    common_options(cr, connects=True)
    cr.add_argument("topic", type=topic_name)
    cr.add_argument("--partitions", type=int_in(1, INT32_MAX), default=-1,
                    help="default: the broker's num.partitions")
    cr.add_argument("--replication-factor", type=int_in(1, INT16_MAX), default=-1,
                    help="default: the broker's default.replication.factor")
    cr.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="topic config; repeatable")
    cr.add_argument("--if-not-exists", action="store_true")
    cr.set_defaults(func=_topics_create)
    de = tsub.add_parser("describe", help="partitions, offsets and non-default configs")
    common_options(de, connects=True)
    de.add_argument("topic", nargs="*", type=topic_name, help="default: every topic")
    de.add_argument("--all-configs", action="store_true", help="also list configs at their defaults")
    de.add_argument("--under-replicated-partitions", action="store_true",
                    help="only partitions whose ISR is smaller than their replicas (no topic lines)")
    de.add_argument("--unavailable-partitions", action="store_true",
                    help="only partitions with no leader, or a leader that is not a live broker (no topic lines)")
    de.set_defaults(func=_topics_describe)
    dl = tsub.add_parser("delete", help="delete topics (each is tried; exit 1 if any failed)")
    common_options(dl, connects=True)
    dl.add_argument("topic", nargs="+", type=topic_name)
    dl.set_defaults(func=_topics_delete)
    al = tsub.add_parser("alter", help="add partitions, set or delete configs")
    common_options(al, connects=True)
    al.add_argument("topic", type=topic_name)
    al.add_argument("--partitions", type=int_in(1, INT32_MAX), help="new (larger) partition count")
    al.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="set; repeatable")
    al.add_argument("--delete-config", action="append", default=[], metavar="KEY", help="back to default")
    al.set_defaults(func=_topics_alter)


def _topics_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for name in c.list_topics(internal=args.internal):
            print(name)
    return 0


def _topics_create(args: argparse.Namespace) -> int:
    from pylog.errors import TopicAlreadyExistsError

    configs = _parse_kv(args.config, "--config")
    with _client(args) as c:
        try:
            d = c.create_topic(args.topic, args.partitions if args.partitions > 0 else None,
                               args.replication_factor if args.replication_factor > 0 else None, configs)
        except TopicAlreadyExistsError:
            if args.if_not_exists:
                return 0
            raise
        print(f"Created topic {args.topic} with {d.num_partitions} partition(s).")
    return 0


def _topics_describe(args: argparse.Namespace) -> int:
    """As Kafka's ``kafka-topics.sh --describe``: a line per topic (with its non-default
    configs) and one per partition, ``Leader: none`` for a partition with no leader.
    With ``--under-replicated-partitions`` and/or ``--unavailable-partitions`` only the
    partitions that are so (either, when both are given) are printed, without the topic
    lines; a partition is unavailable when it has no leader or its leader is not among
    the live (registered) brokers."""
    from pylog.broker.core import TopicDescription
    from pylog.errors import error_for_code

    report = args.under_replicated_partitions or args.unavailable_partitions
    with _client(args) as c:
        found = c.describe_topics(args.topic or None)
        live: set[int] = set()
        if args.unavailable_partitions:
            from pylog.cluster.local import cluster_status

            live = {b[0] for b in cluster_status(args.bootstrap_server, args.timeout)["brokers"]}
        status = 0
        for name in sorted(found):
            t = found[name]
            if not isinstance(t, TopicDescription):
                print(f"Topic: {name}\tError: {error_for_code(t.error_code).kafka_name}", file=sys.stderr)
                status = 1
                continue
            if not args.topic and t.is_internal:
                continue
            if not report:
                configs = c.describe_configs(name)
                shown = [e for e in configs if args.all_configs or not (e.source == 5 or e.is_default)]
                rf = len(t.partitions[0].replicas) if t.partitions else 0
                print(f"Topic: {name}\tTopicId: {t.topic_id}\tPartitionCount: {t.num_partitions}\t"
                      f"ReplicationFactor: {rf}\tConfigs: "
                      + ",".join(f"{e.name}={e.value}" for e in shown))
            for p in sorted(t.partitions, key=lambda p: p.partition):
                if report and not (
                        (args.under_replicated_partitions and len(p.isr) < len(p.replicas))
                        or (args.unavailable_partitions and (p.leader < 0 or p.leader not in live))):
                    continue
                print(f"\tTopic: {name}\tPartition: {p.partition}\tLeader: {p.leader if p.leader >= 0 else 'none'}\t"
                      f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}\t"
                      f"LogStartOffset: {p.log_start_offset}\tLogEndOffset: {p.high_watermark}")
    return status


def _topics_delete(args: argparse.Namespace) -> int:
    from pylog.errors import NetworkError, PylogError

    status = 0
    with _client(args) as c:
        for name in args.topic:
            try:
                c.delete_topic(name)
            except NetworkError:
                raise          # the connection failed: the other topics would fail too
            except PylogError as exc:
                status = _fail(describe_error(exc))
                continue
            print(f"Deleted topic {name}.")
    return status


def _topics_alter(args: argparse.Namespace) -> int:
    sets = _parse_kv(args.config, "--config")
    if args.partitions is None and not sets and not args.delete_config:
        raise CommandError("topics alter: give --partitions, --config or --delete-config", 2)
    with _client(args) as c:
        if args.partitions is not None:
            c.create_partitions(args.topic, args.partitions)
            print(f"Topic {args.topic} now has {args.partitions} partitions.")
        ops = [(k, 0, v) for k, v in sets.items()] + [(k, 1, None) for k in args.delete_config]
        if ops:
            c.incremental_alter_configs(args.topic, ops)
            print(f"Altered configs of {args.topic}: "
                  + ", ".join(f"{k}={v}" if op == 0 else f"{k} (default)" for k, op, v in ops))
    return 0


# --------------------------------------------------------------------------------------
# produce
# --------------------------------------------------------------------------------------


def _add_produce(sub: Any) -> None:
    p = sub.add_parser("produce", help="console producer: one record per input line",
                       description="Read records from stdin (or --file) and produce them.  Formats: "
                                   "'line' (the line's bytes are the value; with --key-separator, key SEP "
                                   "value), 'json' ({\"key\":..., \"value\":..., \"headers\": {...}, "
                                   "\"partition\": n, \"timestamp\": ms} per line, UTF-8).  A topic that "
                                   "does not exist is created if the broker allows it "
                                   "(auto.create.topics.enable), as Kafka's console producer does.")
    common_options(p, connects=True)
    p.add_argument("--topic", required=True, type=topic_name)
    p.add_argument("--partition", type=int_in(0, INT32_MAX), help="all records to this partition")
    p.add_argument("--format", choices=("line", "json"), default="line")
    p.add_argument("--key-separator", help="(line format) split each line into key and value at this string")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                   help="(line format) a header on every record; repeatable")
    p.add_argument("--acks", type=int, choices=(-1, 0, 1), default=-1)
    p.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="none")
    p.add_argument("--batch-size", type=int_in(0, INT32_MAX), default=16384,
                   help="bytes per batch (batch.size; 0 disables batching: one record per batch, as in Kafka)")
    p.add_argument("--file", help="read from this file instead of stdin")
    p.set_defaults(func=_produce, bytes_args=("file", "key_separator"))


_Record = tuple[int | None, bytes | None, bytes | None, list[tuple[str, bytes | None]], int | None]


def _records_from_input(args: argparse.Namespace, lines: Iterable[bytes]) -> Iterator[_Record]:
    """(partition or None, key, value, headers, timestamp or None) per input line.

    Lines are bytes: in the line format they are produced as they are (any bytes); the
    json format needs UTF-8.  Bad input raises :class:`CommandError` naming the line."""
    fixed_headers: list[tuple[str, bytes | None]] = [
        (k, v.encode()) for k, v in _parse_kv(args.header, "--header").items()]
    # argv bytes that are not UTF-8 arrive as surrogates: os.fsencode gives them back.
    separator = os.fsencode(args.key_separator) if args.key_separator else None
    for n, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        if args.format == "json":
            if not line.strip():
                continue
            yield _json_record(n, line, fixed_headers)
        else:
            key = None
            value = line
            if separator:
                if separator not in line:
                    raise CommandError(f"produce: line {n} has no key separator "
                                       f"{_printable(args.key_separator)!r}")
                key, value = line.split(separator, 1)
            yield (None, key, value, fixed_headers, None)


def _json_record(n: int, line: bytes, fixed_headers: list[tuple[str, bytes | None]]) -> _Record:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"produce: line {n}: not UTF-8 (byte {exc.start}); the json format "
                           "needs UTF-8 (use --format line for other bytes)") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"produce: line {n}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        obj = {"value": obj}
    unknown = set(obj) - {"key", "value", "headers", "partition", "timestamp"}
    if unknown:
        raise CommandError(f"produce: line {n}: unknown field(s) {', '.join(sorted(map(repr, unknown)))}; "
                           "expected key, value, headers, partition and timestamp")
    partition = obj.get("partition")
    if partition is not None and not (type(partition) is int and 0 <= partition <= INT32_MAX):
        raise CommandError(f"produce: line {n}: \"partition\" must be a partition number, not "
                           f"{json.dumps(partition)[:40]}")
    timestamp = obj.get("timestamp")
    if timestamp is not None and not (type(timestamp) is int and 0 <= timestamp <= INT64_MAX):
        raise CommandError(f"produce: line {n}: \"timestamp\" must be milliseconds since the epoch "
                           f"(a number), not {json.dumps(timestamp)[:40]}")
    headers = obj.get("headers") or {}
    if isinstance(headers, dict):
        pairs = list(headers.items())
    elif isinstance(headers, list) and all(isinstance(h, list) and len(h) == 2 for h in headers):
        pairs = [(h[0], h[1]) for h in headers]
    else:
        raise CommandError(f"produce: line {n}: \"headers\" must be an object or a list of "
                           "[key, value] pairs")
    if not all(isinstance(k, str) for k, _ in pairs):
        raise CommandError(f"produce: line {n}: header keys must be strings")
    try:
        hs = [(k, None if v is None else _to_bytes(v)) for k, v in pairs]
        key = obj.get("key")
        value = obj.get("value")
        return (partition, None if key is None else _to_bytes(key),
                None if value is None else _to_bytes(value), hs + fixed_headers, timestamp)
    except UnicodeEncodeError:        # "\ud800" in JSON is a lone surrogate: no UTF-8 for it
        raise CommandError(f"produce: line {n}: a string is not valid Unicode (lone surrogate)") from None


def _to_bytes(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    return json.dumps(v, separators=(",", ":")).encode()


def _open_input(args: argparse.Namespace) -> BinaryIO:
    if args.file is None:
        if sys.stdin is None:
            raise CommandError("produce: no standard input; give --file")
        return getattr(sys.stdin, "buffer", sys.stdin)
    if os.path.isdir(args.file):
        raise CommandError(f"produce: --file {_printable(os.fsdecode(args.file))}: Is a directory")
    return open(args.file, "rb")  # noqa: SIM115 - closed by _produce


def _partition_count_creating(c: Any, topic: str) -> int:
    """Partitions of ``topic``, which the broker creates if it does not exist and it
    allows that (Metadata allow_auto_topic_creation, as Kafka's producer asks)."""
    from pylog.errors import UnknownTopicOrPartitionError

    try:
        return int(c.num_partitions(topic))
    except UnknownTopicOrPartitionError:
        raise CommandError(f"topic {topic} does not exist and the broker did not create it "
                           "(auto.create.topics.enable=false?): create it with 'pylog topics create'") from None


class _Deliveries:
    """Counts the acknowledgements of the records a producer sent (callbacks run on the
    producer's sender thread) and keeps the first failure."""

    def __init__(self) -> None:
        self.sent = self.acked = self.done = 0
        self.error: BaseException | None = None
        self._cond = threading.Condition()

    def track(self, future: Any) -> None:
        with self._cond:
            self.sent += 1
        future.add_done_callback(self._on_done)

    def _on_done(self, future: Any) -> None:
        exc = future.exception()
        with self._cond:
            self.done += 1
            if exc is None:
                self.acked += 1
            elif self.error is None:
                self.error = exc
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Until every tracked record has its answer (or ``timeout`` seconds passed)."""
        with self._cond:
            self._cond.wait_for(lambda: self.done >= self.sent, timeout)


def _produce(args: argparse.Namespace) -> int:
    stream = _open_input(args)
    deliveries = _Deliveries()
    timeout_ms = max(1, int(args.timeout * 1000))
    try:
        with _client(args, "pylog-console-producer") as c:
            count = _partition_count_creating(c, args.topic)
            if args.partition is not None and args.partition >= count:
                return _fail(f"topic {args.topic} has no partition {args.partition}")
            # Kafka's producer with the tool's settings: murmur2 of the key, sticky for
            # keyless records, idempotent with acks=all; an answer waits --timeout.
            producer = c.producer(acks=args.acks, compression_type=args.compression, batch_size=args.batch_size,
                                  client_id="pylog-console-producer", request_timeout_ms=timeout_ms,
                                  delivery_timeout_ms=timeout_ms + 5, max_block_ms=timeout_ms)
            try:
                for partition, key, value, headers, ts in _records_from_input(args, stream):
                    if partition is None:
                        partition = args.partition
                    elif partition >= count:
                        raise CommandError(f"topic {args.topic} has no partition {partition}")
                    if deliveries.error is not None:
                        break
                    deliveries.track(producer.send(args.topic, value, key, headers=headers, partition=partition,
                                                   timestamp_ms=ts))
                producer.flush()
                deliveries.wait(args.timeout)
                if deliveries.error is not None:
                    raise deliveries.error
            except BaseException:
                if deliveries.sent:
                    try:
                        producer.flush(args.timeout)
                    except Exception:  # noqa: BLE001 - the first failure is the one reported
                        pass
                    deliveries.wait(args.timeout)
                if deliveries.acked:
                    print(f"Produced {deliveries.acked} record(s) to {args.topic} before the failure.",
                          file=sys.stderr)
                raise
    finally:
        if args.file is not None:
            stream.close()
    print(f"Produced {deliveries.acked} record(s) to {args.topic}.", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------
# consume
# --------------------------------------------------------------------------------------


def _add_consume(sub: Any) -> None:
    p = sub.add_parser("consume", help="console consumer",
                       description="Print records of a topic.  Without --group it reads every partition "
                                   "(or --partition) from --offset; with --group it joins the consumer "
                                   "group and commits what it printed.  An --offset outside the log is "
                                   "reset to the log's start or end, with a warning.")
    common_options(p, connects=True)
    p.add_argument("--topic", required=True, type=topic_name)
    p.add_argument("--group", help="consumer group to join (commits its position)")
    p.add_argument("--partition", type=int_in(0, INT32_MAX))
    p.add_argument("--offset", default=None, type=offset_spec,
                   help="'earliest', 'latest' or an offset (default: latest, or the group's commit)")
    p.add_argument("--from-beginning", action="store_true", help="same as --offset earliest")
    p.add_argument("--max-messages", type=int_in(1), help="exit after this many records")
    p.add_argument("--timeout-ms", type=int_in(0), help="exit when no record arrives for this long")
    p.add_argument("--format", choices=("value", "line", "json"), default="value",
                   help="value: the value; line: [key SEP] value with --print-key; json: one object per record")
    p.add_argument("--print-key", action="store_true")
    p.add_argument("--print-headers", action="store_true")
    p.add_argument("--print-offset", action="store_true")
    p.add_argument("--key-separator", default="\t")
    p.add_argument("--assignor", default="range", choices=("range", "roundrobin", "cooperative-sticky"))
    p.set_defaults(func=_consume)


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
        parts.append(",".join(f"{k}:{_shown(v)}" for k, v in r.headers) or "NO_HEADERS")
    if args.print_key:
        parts.append(_shown(r.key))
    parts.append(_shown(r.value))
    return args.key_separator.join(parts)


def _shown(b: bytes | None) -> str:
    """Bytes as the console tools print them: ``null`` for none, else :func:`_text`."""
    return "null" if b is None else str(_text(b))


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    try:
        return bytes(b).decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(b)).decode()


def _consume(args: argparse.Namespace) -> int:
    if args.from_beginning:
        args.offset = "earliest"
    terminated = [False]

    def on_term(_sig: int, _frame: Any) -> None:
        terminated[0] = True

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return _consume_loop(args, terminated)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _consume_loop(args: argparse.Namespace, terminated: list[bool]) -> int:
    from pylog.client.consumer import ConsumerRebalanceListener

    printed = 0
    out = sys.stdout
    with _client(args, "pylog-console-consumer") as c:
        count = c.describe_topic(args.topic).num_partitions

        def in_range(p: int, offset: int) -> int:
            """``offset`` if partition ``p`` holds it (or it is the log end), else the log
            start or end, with the warning Kafka's consumer logs on a reset."""
            start, end = c.log_offsets(args.topic, p)
            if start <= offset <= end:
                return offset
            reset = start if offset < start else end
            _warn(f"consume: offset {offset} is out of range for partition {args.topic}-{p} "
                  f"(log start offset {start}, log end offset {end}); resetting to offset {reset}")
            return reset

        # Without a committed offset (or with one out of range) the consumer starts at
        # the log start for 'earliest', else at the log end; an explicit --offset is
        # sought once the partition is ours.
        config: dict[str, Any] = dict(
            client_id="pylog-console-consumer", enable_auto_commit=False,
            auto_offset_reset="earliest" if args.offset == "earliest" else "latest",
            fetch_max_wait_ms=200, fetch_max_bytes=4 << 20, max_partition_fetch_bytes=1 << 20)
        if args.group:
            consumer = c.consumer(group_id=args.group, partition_assignment_strategy=(args.assignor,),
                                  session_timeout_ms=10000, **config)

            class SeekOnAssign(ConsumerRebalanceListener):
                def on_partitions_assigned(self, assigned: set) -> None:
                    if isinstance(args.offset, int):
                        for tp in assigned:
                            consumer.seek(tp, in_range(tp.partition, args.offset))

            consumer.subscribe([args.topic], listener=SeekOnAssign())
        else:
            wanted = [args.partition] if args.partition is not None else list(range(count))
            for p in wanted:
                if p >= count:
                    return _fail(f"topic {args.topic} has no partition {p}")
            consumer = c.consumer(**config)
            tps = [(args.topic, p) for p in wanted]
            consumer.assign(tps)
            if isinstance(args.offset, int):
                for tp in tps:
                    consumer.seek(tp, in_range(tp[1], args.offset))
            elif args.offset == "earliest":
                consumer.seek_to_beginning(*tps)
            else:
                consumer.seek_to_end(*tps)
        last_data = time.monotonic()
        try:
            while not terminated[0]:
                left = None if args.max_messages is None else args.max_messages - printed
                # At most what is still to print: the group's commit (the consumer's
                # position) never passes a record that was not printed.
                records = consumer.poll(timeout_ms=200, max_records=left)
                for r in records:
                    out.write(_format_record(args, r.topic, r.partition, r) + "\n")
                printed += len(records)
                if records:
                    out.flush()
                    last_data = time.monotonic()
                    if args.group:
                        consumer.commit()
                    if args.max_messages is not None and printed >= args.max_messages:
                        break
                elif args.timeout_ms is not None and (time.monotonic() - last_data) * 1000 > args.timeout_ms:
                    break
        finally:
            consumer.close(autocommit=False)
    print(f"Processed a total of {printed} messages", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------------------


def _add_groups(sub: Any) -> None:
    p = sub.add_parser("groups", help="list, describe, reset-offsets and delete consumer groups")
    gsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = gsub.add_parser("list", help="group ids, one per line")
    common_options(ls, connects=True)
    ls.add_argument("--state", action="store_true", help="also print each group's state")
    ls.set_defaults(func=_groups_list)
    de = gsub.add_parser("describe", help="members, committed offsets and lag per partition")
    common_options(de, connects=True)
    de.add_argument("group")
    de.set_defaults(func=_groups_describe)
    rs = gsub.add_parser("reset-offsets", help="move a group's committed offsets (group must be empty)")
    common_options(rs, connects=True)
    rs.add_argument("group")
    rs.add_argument("--topic", required=True, type=topic_partitions, help="TOPIC or TOPIC:P1,P2")
    how = rs.add_mutually_exclusive_group(required=True)
    how.add_argument("--to-earliest", action="store_true")
    how.add_argument("--to-latest", action="store_true")
    how.add_argument("--to-offset", type=int_in(0, INT64_MAX))
    how.add_argument("--shift-by", type=int_in(-INT64_MAX, INT64_MAX))
    how.add_argument("--to-datetime", metavar="TIME", type=datetime_ms,
                     help="first offset at or after this time: epoch milliseconds or ISO 8601 "
                          "(2024-05-01T12:00:00.000, local time; or with Z or +HH:MM)")
    rs.add_argument("--execute", action="store_true", help="commit the new offsets (default: only show them)")
    rs.set_defaults(func=_groups_reset)
    dl = gsub.add_parser("delete", help="delete empty groups and their offsets (each is tried; exit 1 if any failed)")
    common_options(dl, connects=True)
    dl.add_argument("group", nargs="+")
    dl.set_defaults(func=_groups_delete)


def _groups_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for g in sorted(c.list_groups(), key=lambda g: g.group_id):
            print(f"{g.group_id}\t{g.state or '?'}" if args.state else g.group_id)
    return 0


def _code_error(code: int, what: str) -> Exception:
    """The pylog error for Kafka error ``code``, as ``what: KAFKA_NAME`` (which
    :func:`describe_error` words as Kafka's tools do)."""
    from pylog.errors import error_for_code

    return error_for_code(code, f"{what}: {error_for_code(code).kafka_name}")


def _describe_group(c: Any, group: str) -> Any:
    g = c.describe_groups([group])[0]
    if g.error_code:
        raise _code_error(g.error_code, f"describe group {group}")
    return g


def _committed(c: Any, group: str, partitions: dict[str, list[int]] | None = None) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the group's committed offset (-1: none)."""
    res = c.fetch_offsets(group, partitions)
    if res.error_code:
        raise _code_error(res.error_code, f"fetch offsets of {group}")
    return {(t, p): f.offset for t, parts in res.topics.items() for p, f in parts.items()}


def _lag_rows(c: Any, group: str) -> list[tuple]:
    rows = []
    for (topic, p), off in sorted(_committed(c, group).items()):
        end = c.high_watermark(topic, p)
        rows.append((topic, p, off, end, end - off if off >= 0 else None))
    return rows


def _groups_describe(args: argparse.Namespace) -> int:
    from pylog.broker.consumer_protocol import decode_assignment

    with _client(args) as c:
        g = _describe_group(c, args.group)
        if g.state == "Dead":
            return _fail(f"consumer group {args.group} does not exist")
        owners: dict[tuple[str, int], tuple[str, str, str]] = {}
        for mem in g.members:
            if g.protocol_type == "consumer" and mem.assignment:
                try:
                    a = decode_assignment(mem.assignment)
                except Exception:  # noqa: BLE001 - a foreign assignment format: show no owner
                    continue
                for topic, parts in a.partitions.items():
                    for p in parts:
                        owners[(topic, p)] = (mem.member_id, mem.client_host, mem.client_id)
        rows = _lag_rows(c, args.group)
        for key in owners:
            if key not in {(r[0], r[1]) for r in rows}:
                rows.append((key[0], key[1], -1, c.high_watermark(*key), None))
        print(f"Group: {args.group}\tState: {g.state}\tProtocol: {g.protocol_data or '-'}\t"
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
    topic, plist = args.topic
    with _client(args) as c:
        count = c.describe_topic(topic).num_partitions
        parts = list(range(count)) if plist is None else plist
        missing = [p for p in parts if p >= count]
        if missing:
            raise CommandError(f"topic {topic} has no partition {', '.join(map(str, missing))}")
        g = _describe_group(c, args.group)
        if g.state not in ("Empty", "Dead") and args.execute:
            return _fail(f"group {args.group} is {g.state}: stop its consumers before resetting offsets")
        current = _committed(c, args.group, {topic: parts})
        new = {}
        for p in parts:
            start, end = c.log_offsets(topic, p)
            if args.to_earliest:
                target = start
            elif args.to_latest:
                target = end
            elif args.to_offset is not None:
                target = args.to_offset
            elif args.to_datetime is not None:
                found = c.list_offsets(topic, p, args.to_datetime)
                found.raise_for_error()
                target = end if found.offset < 0 else found.offset
            else:
                cur = current.get((topic, p), -1)
                target = (cur if cur >= 0 else end) + args.shift_by
            new[p] = min(max(target, start), end)      # out of range: clamped, as in Kafka
        print("GROUP\tTOPIC\tPARTITION\tNEW-OFFSET")
        for p, off in sorted(new.items()):
            print(f"{args.group}\t{topic}\t{p}\t{off}")
        if args.execute:
            for t, codes in c.commit_offsets(args.group, {topic: new}).items():
                for p, code in sorted(codes.items()):
                    if code:
                        raise _code_error(code, f"commit {args.group} {t}-{p}")
        else:
            print("(dry run: add --execute to commit these offsets)", file=sys.stderr)
    return 0


def _groups_delete(args: argparse.Namespace) -> int:
    status = 0
    with _client(args) as c:
        for gid in args.group:
            code = c.delete_groups([gid]).get(gid, 0)
            if code:
                status = _fail(describe_error(_code_error(code, f"delete group {gid}")))
                continue
            print(f"Deleted group {gid}.")
    return status


# --------------------------------------------------------------------------------------
# transactions
# --------------------------------------------------------------------------------------


def _add_transactions(sub: Any) -> None:
    p = sub.add_parser("transactions", help="list and describe transactions (as kafka-transactions.sh)")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = tsub.add_parser("list", help="transactional ids with their producer id and state, one per line")
    common_options(ls, connects=True)
    ls.add_argument("--state", action="append", default=[], metavar="STATE",
                    help="only transactions in this state (Ongoing, PrepareCommit, CompleteAbort, ...); repeatable")
    ls.add_argument("--producer-id", action="append", default=[], type=int_in(0, INT64_MAX), metavar="ID",
                    help="only transactions of this producer id; repeatable")
    ls.add_argument("--duration-filter", type=int_in(0, INT64_MAX), default=-1, metavar="MS",
                    help="only transactions running at least this many milliseconds")
    ls.set_defaults(func=_transactions_list)
    de = tsub.add_parser("describe", help="state, producer, timeout and partitions of a transaction")
    common_options(de, connects=True)
    de.add_argument("--transactional-id", required=True, metavar="ID")
    de.set_defaults(func=_transactions_describe)


def _txn_call(c: Any, timeout: float, api_key: int, body: Any, node: int | None = None) -> Any:
    """One request of the transaction admin APIs over the client's network (to ``node``,
    or to any broker), its answer."""
    net = c.transport.net
    ms = max(1, int(timeout * 1000))
    f = net.send_to_any(api_key, body, timeout_ms=ms) if node is None else net.send(node, api_key, body, timeout_ms=ms)
    return f.result(timeout + 5)


def _transactions_list(args: argparse.Namespace) -> int:
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey

    with _client(args) as c:
        body = m.ListTransactionsRequest(state_filters=args.state, producer_id_filters=args.producer_id,
                                         duration_filter=args.duration_filter)
        res = _txn_call(c, args.timeout, ApiKey.LIST_TRANSACTIONS, body)
        if res.error_code:
            raise _code_error(res.error_code, "list transactions")
        for name in res.unknown_state_filters or []:
            _warn(f"unknown transaction state {name!r}")
        print("TransactionalId\tProducerId\tTransactionState")
        for t in sorted(res.transaction_states, key=lambda t: t.transactional_id):
            print(f"{_printable(t.transactional_id)}\t{t.producer_id}\t{t.transaction_state}")
    return 0


def _transactions_describe(args: argparse.Namespace) -> int:
    from pylog.client.kafka.cluster import coordinator_broker_id
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey

    tid = args.transactional_id
    with _client(args) as c:
        node = c.transport.net.find_coordinator(tid, 1, timeout_ms=max(1, int(args.timeout * 1000))).result(
            args.timeout + 5)
        res = _txn_call(c, args.timeout, ApiKey.DESCRIBE_TRANSACTIONS,
                        m.DescribeTransactionsRequest(transactional_ids=[tid]), node)
        d = res.transaction_states[0]
        if d.error_code:
            raise _code_error(d.error_code, f"describe transaction {tid}")
        start = d.transaction_start_time_ms
        duration = max(0, int(time.time() * 1000) - start) if start >= 0 and d.transaction_state == "Ongoing" else ""
        parts = ",".join(f"{t.topic}-{p}" for t in d.topics for p in t.partitions)
        print("CoordinatorId\tTransactionalId\tProducerId\tProducerEpoch\tTransactionState\t"
              "TransactionTimeoutMs\tCurrentTransactionStartTimeMs\tTransactionDurationMs\tTopicPartitions")
        print(f"{coordinator_broker_id(node)}\t{_printable(tid)}\t{d.producer_id}\t{d.producer_epoch}\t{d.transaction_state}\t"
              f"{d.transaction_timeout_ms}\t{start if start >= 0 else 'None'}\t{duration}\t{parts}")
    return 0


# --------------------------------------------------------------------------------------
# dump-log
# --------------------------------------------------------------------------------------


def _add_dump_log(sub: Any) -> None:
    p = sub.add_parser("dump-log", help="decode a segment file (.log, .index, .timeindex or .txnindex)",
                       description="Print the batches of a segment file as Kafka's DumpLogSegments does "
                                   "(a transaction marker's line says 'endTxnMarker: COMMIT "
                                   "coordinatorEpoch: N'), or the entries of an index (a .txnindex: "
                                   "the aborted transactions).  "
                                   "A batch whose CRC does not match is printed with 'isvalid: false' and "
                                   "the dump goes on; a batch whose framing is broken ends the dump of that "
                                   "file.  Exit status 1 if any batch was invalid or a file unreadable.")
    p.add_argument("files", nargs="+", metavar="SEGMENT")
    p.add_argument("--print-data", action="store_true", help="print every record (keys, values, headers)")
    p.add_argument("--no-crc-check", action="store_true",
                   help="do not compute batch CRCs (faster; isvalid is printed as 'unchecked')")
    common_options(p, connects=False)
    p.set_defaults(func=_dump_log, bytes_args=("files",))


def _dump_log(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        shown = _printable(os.fsdecode(path))
        print(f"Dumping {shown}")
        try:
            if path.endswith(".index"):
                _dump_index(path, ">II", lambda base, rel, pos: f"offset: {base + rel} position: {pos}")
            elif path.endswith(".timeindex"):
                _dump_index(path, ">qI", lambda base, ts, rel: f"timestamp: {ts} offset: {base + rel}")
            elif path.endswith(".txnindex"):
                status |= _dump_txn_index(path, shown)
            else:
                status |= _dump_segment(path, shown, args)
        except BrokenPipeError:
            raise                  # the reader went away (| head): not a problem of the file
        except (OSError, ValueError) as exc:      # ValueError: mmap of a file that is not regular
            _warn(f"dump-log: {shown}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
            status = 1
    return status


def _base_offset_of(path: str) -> int:
    stem = os.path.basename(path).split(".", 1)[0]
    return int(stem) if stem.isdigit() and stem.isascii() else 0


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


def _dump_txn_index(path: str, shown: str) -> int:
    """The entries of a ``.txnindex`` as Kafka's tool prints them; a damaged file is
    reported (exit status 1) after the entries before the damage."""
    from pylog.storage.txn_index import ENTRY_SIZE, CorruptTxnIndexError, TransactionIndex

    with open(path, "rb") as f:
        data = f.read()
    whole = len(data) - len(data) % ENTRY_SIZE
    try:
        entries = TransactionIndex.decode(data, _base_offset_of(path), None, shown)
        error = None
    except CorruptTxnIndexError as exc:
        error = str(exc)
        entries = []
        for pos in range(0, whole, ENTRY_SIZE):   # what still decodes, entry by entry
            try:
                entries += TransactionIndex.decode(data[pos:pos + ENTRY_SIZE], 0, None, shown)
            except CorruptTxnIndexError:
                break
    for e in entries:
        print(f"version: 0 producerId: {e.producer_id} firstOffset: {e.first_offset} "
              f"lastOffset: {e.last_offset} lastStableOffset: {e.last_stable_offset}")
    if error is not None:
        _warn(f"dump-log: {error}")
        return 1
    return 0


def _control_line(b: Any, kind: str) -> str:
    """Kafka's record line of a control batch: the transaction marker it holds."""
    from pylog.errors import PylogError
    from pylog.records import ControlRecord, ControlRecordType

    try:
        for r in b:
            rec = ControlRecord.from_record(r)
            what = (f"endTxnMarker: {rec.type.name} coordinatorEpoch: {rec.coordinator_epoch}"
                    if rec.type in (ControlRecordType.ABORT, ControlRecordType.COMMIT)
                    else f"controlType: {getattr(rec.type, 'name', 'UNKNOWN')}({int(rec.type)})")
            return (f"| offset: {r.offset} {kind}: {r.timestamp} keySize: {len(r.key or b'')} valueSize: "
                    f"{-1 if r.value is None else len(r.value)} sequence: {b.base_sequence} headerKeys: [] {what}")
    except (PylogError, ValueError) as exc:
        return f"| control record not decodable: {exc}"
    return "| control batch without a record"


def _dump_segment(path: str, shown: str, args: argparse.Namespace) -> int:
    import mmap

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            print("0 batch(es), 0 bytes")
            return 0
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            count, invalid, end, error = _print_batches(mm, args)
        finally:
            try:
                mm.close()     # every view into it died with _print_batches' frame...
            except BufferError:
                pass           # ...unless an exception's traceback keeps it: freed with it
    status = 0
    if invalid:
        _warn(f"dump-log: {shown}: {invalid} of {count} batch(es) failed the CRC check (isvalid: false)")
        status = 1
    if error is not None or end < size:
        if _all_zero(path, end):
            print(f"{count} batch(es), {end} bytes; the rest of the file ({size - end} bytes) is "
                  "preallocated and unused")
            return status
        _warn(f"dump-log: {shown}: corrupt batch at byte {end}: "
              f"{error or f'the file ends {size - end} bytes into a partial batch'}")
        return 1
    print(f"{count} batch(es), {end} bytes")
    return status


def _print_batches(mm: Any, args: argparse.Namespace) -> tuple[int, int, int, str | None]:
    """Print the batches of a mapped segment: (batches, batches with a bad CRC, bytes of
    whole batches, the framing error that stopped the dump or None).  A bad CRC does not
    stop it (the framing still says where the next batch starts), as in Kafka's tool."""
    from pylog.errors import PylogError
    from pylog.records import iter_batches

    codecs = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
    it = iter_batches(memoryview(mm), check_crc=False)
    count = invalid = 0
    try:
        for b in it:
            pos = it.position - b.size
            kind = "LogAppendTime" if b.timestamp_type == "log_append" else "CreateTime"
            if args.no_crc_check:
                valid = "unchecked"
            else:
                ok = bool(b.crc_matches())
                valid = "true" if ok else "false"
                invalid += not ok
            print(f"baseOffset: {b.base_offset} lastOffset: {b.last_offset} count: {b.records_count} "
                  f"baseSequence: {b.base_sequence} lastSequence: {b.last_sequence} "
                  f"producerId: {b.producer_id} producerEpoch: {b.producer_epoch} "
                  f"partitionLeaderEpoch: {b.partition_leader_epoch} isTransactional: "
                  f"{str(b.is_transactional).lower()} isControl: {str(b.is_control).lower()} "
                  f"position: {pos} {kind}: {b.max_timestamp} size: {b.size} magic: {b.magic} "
                  f"compresscodec: {codecs.get(b.codec, b.codec)} crc: {b.crc} isvalid: {valid}")
            count += 1
            if b.is_control:
                print(_control_line(b, kind))
            elif args.print_data:
                try:
                    for r in b:
                        hs = ",".join(f"{k}:{_shown(v)}" for k, v in r.headers)
                        print(f"| offset: {r.offset} {kind}: {r.timestamp} keySize: "
                              f"{-1 if r.key is None else len(r.key)} valueSize: "
                              f"{-1 if r.value is None else len(r.value)} headerKeys: [{hs}] "
                              f"key: {_shown(r.key)} payload: {_shown(r.value)}")
                except PylogError as exc:
                    print(f"| records not decodable: {describe_error(exc)}")
    except PylogError as exc:
        return count, invalid, it.position, describe_error(exc)
    return count, invalid, it.position, None


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
