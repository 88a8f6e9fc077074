"""The ``pylog`` command.

``pylog [--bootstrap-server H:P] [--timeout S] [--log-level L] COMMAND ...``: the
options every command shares may come before or after the subcommand.  Errors are one
line on stderr, ``pylog: <message>``, exit status 2 for bad usage and 1 for a failed
operation (see :mod:`pylog.server.tools`); a traceback is never what a user sees.  An
error the tools did not foresee is reported as "unexpected error" (a bug: the hostile
argument test in ``tests/test_cli_hostile.py`` fails on it), with the traceback only
under ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from typing import Any, Callable, NoReturn, Sequence

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``pylog: <message> (see 'pylog X --help')``."""

    def error(self, message: str) -> NoReturn:
        from pylog.server.tools import _printable

        self.exit(2, f"pylog: {_printable(message)} (see '{self.prog} --help')\n")


def _demo_batch(values: list[bytes], timestamp_ms: int) -> bytes:
    """One uncompressed v2 batch of ``values`` (pylog.records' builder)."""
    from pylog.records import RecordBatchBuilder

    builder = RecordBatchBuilder()
    for v in values:
        builder.append(timestamp_ms, None, v)
    return bytes(builder.build())


def _demo(args: argparse.Namespace) -> int:
    from pylog import _core
    from pylog.server.tools import CommandError, _printable
    from pylog.storage import Log

    if os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise CommandError(f"demo: --data-dir {_printable(os.fsdecode(args.data_dir))!r} is not a directory", 2)
    path = os.path.join(args.data_dir, f"{args.topic}-0")
    print(f"opening log {_printable(os.fsdecode(path))}")
    with Log.open(path, segment_bytes=args.segment_bytes) as log:
        how = "clean shutdown" if log.had_clean_shutdown else (
            f"recovered {len(log.recovered)} segment(s)" if log.recovered else "new log")
        print(f"  {how}; offsets [{log.log_start_offset}, {log.log_end_offset}), "
              f"{len(log.segments)} segment(s)")
        first = log.log_end_offset
        now = int(time.time() * 1000)
        for i in range(args.batches):
            values = [f"demo batch {i} record {j}".encode() for j in range(args.records)]
            info = log.append(_demo_batch(values, now + i))
            print(f"appended batch {i}: offsets {info.base_offset}..{info.last_offset}, "
                  f"{info.size} bytes at {os.path.basename(log.active_segment.path)}:{info.position}")
        log.flush()
        print(f"flushed: recovery point {log.recovery_point}")
        offset = first
        while offset < log.log_end_offset:
            result = log.read(offset, max_bytes=1024)
            pos = 0
            data = result.records
            while pos < result.size:
                h = _core.read_batch_header(data, pos)
                print(f"read batch at offset {h['base_offset']}: {h['records_count']} records, "
                      f"{h['size']} bytes, CRC {h['crc']:#010x} ok")
                pos += h["size"]
            offset = result.next_offset
            result.release()
        print(f"log now holds offsets [{log.log_start_offset}, {log.log_end_offset}) in "
              f"{len(log.segments)} segment(s); closing cleanly")
    return 0


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``pylog`` argument parser (every subcommand; ``only="serve"``: that one alone)."""
    from pylog import __version__
    from pylog.server import tools
    from pylog.server.tools import INT32_MAX, common_options, int_in, topic_name

    parser = _Parser(prog="pylog", description="Apache Kafka's architecture as a Python package.")
    parser.add_argument("--version", action="version", version=f"pylog {__version__}")
    common_options(parser, connects=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if only == "serve":
        tools._add_serve(sub)
        return parser
    demo = sub.add_parser("demo", help="append a few batches to a log and read them back",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--data-dir", default="pylog-data", help="data directory")
    demo.add_argument("--topic", default="demo", type=topic_name, help="topic name (the log is <topic>-0)")
    demo.add_argument("--batches", type=int_in(0, 1_000_000), default=3, help="batches to append")
    demo.add_argument("--records", type=int_in(1, 100_000), default=5, help="records per batch")
    demo.add_argument("--segment-bytes", type=int_in(14, INT32_MAX), default=1024 * 1024,
                      help="segment.bytes of the log")
    common_options(demo, connects=False)
    demo.set_defaults(func=_demo, bytes_args=("data_dir",))
    tools.add_commands(sub)
    _add_cluster(sub, common_options, int_in)
    _add_streams(sub)
    return parser


def _add_cluster(sub: Any, common_options: Any, int_in: Any) -> None:
    cluster = sub.add_parser("cluster", help="a local multi-broker cluster: start one, or show one's state")
    actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up", help="start ZooKeeper (unless --zookeeper) and N brokers on loopback; Ctrl-C stops them",
        description="Start a local cluster: Debian's ZooKeeper (unless --zookeeper is given) and N "
                    "`pylog serve --zookeeper` brokers on free 127.0.0.1 ports. Prints the bootstrap "
                    "servers; SIGINT/SIGTERM stops the brokers (controlled shutdown) and ZooKeeper.")
    up.add_argument("--brokers", type=int_in(1, 64), default=3, help="number of brokers (default 3)")
    up.add_argument("--zookeeper", metavar="HOST:PORT[/CHROOT]", help="a running ZooKeeper to use")
    up.add_argument("--data-dir", default="pylog-cluster",
                    help="base directory of the brokers' data (default ./pylog-cluster)")
    up.add_argument("--override", metavar="KEY=VALUE", action="append", default=[],
                    help="a broker config for every broker, e.g. min.insync.replicas=2; repeatable")
    common_options(up, connects=False)
    up.set_defaults(func=_cluster_up, bytes_args=("data_dir",))
    status = actions.add_parser("status", help="brokers, the controller, under-replicated and offline partitions")
    common_options(status, connects=True)
    status.set_defaults(func=_cluster_status)


def _cluster_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pylog.cluster.local import LocalCluster

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(args.data_dir, args.brokers, zookeeper=args.zookeeper, overrides=args.override)
    try:
        cluster.start()
    except RuntimeError as exc:
        print(f"pylog cluster up: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"zookeeper: {cluster.zookeeper_connect}", flush=True)
        for i, proc in sorted(cluster.procs.items()):
            print(f"broker {i}: 127.0.0.1:{cluster.ports[i]} (pid {proc.pid}, log "
                  f"{os.fsdecode(args.data_dir)}/broker-{i}.log)", flush=True)
        print(f"bootstrap: {cluster.bootstrap}", flush=True)
        stop.wait()
        print("stopping: controlled shutdown of each broker, then ZooKeeper", flush=True)
    finally:
        cluster.stop()
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    from pylog.cluster.local import cluster_status

    st = cluster_status(args.bootstrap_server, args.timeout)
    print(f"cluster id: {st['cluster_id']}")
    print(f"controller: {st['controller_id']}")
    for node_id, host, port, rack in st["brokers"]:
        print(f"broker {node_id}: {host}:{port}" + (f" rack {rack}" if rack else ""))
    print(f"topics: {st['topics']}")
    print(f"under-replicated partitions: {len(st['under_replicated'])}")
    for t, p in st["under_replicated"]:
        print(f"  {t}-{p}")
    print(f"offline partitions: {len(st['offline'])}")
    for t, p in st["offline"]:
        print(f"  {t}-{p}")
    return 0 if not st["offline"] else 1


def _topic_list(text: str) -> list:
    """An argparse type: ``T1,T2,...`` (Kafka's comma-separated topic lists)."""
    from pylog.server.tools import topic_name

    return [topic_name(t.strip()) for t in text.split(",") if t.strip()]


def _duration_ms(text: str) -> int:
    """An argparse type: an ISO 8601 duration (``PT15M``) in milliseconds."""
    from pylog.streams.reset import parse_duration_ms

    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _application_id(text: str) -> str:
    """An argparse type: an ``application.id`` (it prefixes topic names: Kafka's topic
    characters, not empty)."""
    from pylog.server.tools import _printable, topic_name

    try:
        return topic_name(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"application id {_printable(text)!r} is illegal: it must be 1 to 249 ASCII alphanumerics, "
            "'.', '_' and '-' (it prefixes the application's internal topic names)") from None


def _add_streams(sub: Any) -> None:
    from pylog.server.tools import INT64_MAX, common_options, datetime_ms, int_in

    streams = sub.add_parser("streams", help="tools for pylog.streams applications")
    actions = streams.add_subparsers(dest="action", required=True, metavar="ACTION")
    rs = actions.add_parser(
        "reset", help="reset an application so it reprocesses its input (kafka-streams-application-reset)",
        description="Reset a streams application (as Kafka's kafka-streams-application-reset): with no instance "
                    "running, move its committed offsets of the input topics (to the earliest by default), move "
                    "intermediate topics to their end, delete its internal topics (<application.id>-...-changelog, "
                    "-repartition) and, with --state-dir, its local state.  Output topics are not touched.  Run "
                    "with --dry-run first: the reset cannot be undone.")
    rs.add_argument("--application-id", required=True, type=_application_id,
                    help="the application.id (its consumer group)")
    rs.add_argument("--data-dir", help="an embedded data directory (pylog.open) instead of --bootstrap-server")
    rs.add_argument("--input-topics", type=_topic_list, action="append", default=[], metavar="T1,T2",
                    help="input topics whose committed offsets are reset (repeatable)")
    rs.add_argument("--intermediate-topics", type=_topic_list, action="append", default=[], metavar="T1,T2",
                    help="topics the application writes and reads: moved to their end (repeatable)")
    rs.add_argument("--internal-topics", type=_topic_list, action="append", metavar="T1,T2",
                    help="delete only these internal topics (a subset of those a dry run lists)")
    how = rs.add_mutually_exclusive_group()
    how.add_argument("--to-earliest", action="store_true", help="input offsets to the log start (the default)")
    how.add_argument("--to-latest", action="store_true", help="input offsets to the log end")
    how.add_argument("--to-offset", type=int_in(0, INT64_MAX), metavar="N", help="input offsets to N")
    how.add_argument("--shift-by", type=int_in(-INT64_MAX, INT64_MAX), metavar="N",
                     help="input offsets to the committed offset plus N (negative: back)")
    how.add_argument("--to-datetime", type=datetime_ms, metavar="TIME",
                     help="input offsets to the first record at or after TIME: epoch ms or ISO 8601")
    how.add_argument("--by-duration", type=_duration_ms, metavar="PnDTnHnMnS",
                     help="input offsets to the first record at or after now minus this ISO 8601 duration")
    how.add_argument("--from-file", metavar="CSV", help="input offsets from a plan of TOPIC,PARTITION,OFFSET lines")
    rs.add_argument("--state-dir", help="also delete the application's local state under this state.dir")
    rs.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    rs.add_argument("--force", action="store_true",
                    help="remove the group's members first (instances that stopped without leaving)")
    common_options(rs, connects=True)
    rs.set_defaults(func=_streams_reset, bytes_args=("data_dir", "state_dir", "from_file"))


def _streams_reset(args: argparse.Namespace) -> int:
    import pylog
    from pylog.errors import InvalidConfigError
    from pylog.server.tools import CommandError, _printable, connect, describe_error
    from pylog.streams.reset import parse_reset_plan, reset_application

    if args.data_dir is not None:
        if "bootstrap_server" in args.given:
            raise CommandError("streams reset: give --data-dir (embedded) or --bootstrap-server, not both", 2)
        if not os.path.isfile(os.path.join(args.data_dir, "meta.properties")):
            # never make a new broker's files in a directory that was mistyped
            raise CommandError(f"streams reset: --data-dir {_printable(os.fsdecode(args.data_dir))!r} is not a "
                               "pylog data directory (it has no meta.properties)", 2)
    plan = None
    if args.from_file is not None:
        try:
            with open(args.from_file, encoding="utf-8") as f:
                plan = parse_reset_plan(f.read())
        except (OSError, ValueError) as exc:
            raise CommandError(f"streams reset: --from-file {_printable(os.fsdecode(args.from_file))}: "
                               f"{describe_error(exc)}", 2) from None
    client = pylog.open(args.data_dir) if args.data_dir is not None else connect(
        args.bootstrap_server, args.timeout, "pylog-streams-reset")
    with client:
        try:
            result = reset_application(
                client, args.application_id,
                input_topics=[t for ts in args.input_topics for t in ts],
                intermediate_topics=[t for ts in args.intermediate_topics for t in ts],
                internal_topics=(None if args.internal_topics is None
                                 else [t for ts in args.internal_topics for t in ts]),
                to_latest=args.to_latest, to_offset=args.to_offset, shift_by=args.shift_by,
                to_datetime_ms=args.to_datetime, by_duration_ms=args.by_duration, plan=plan,
                force=args.force, dry_run=args.dry_run,
                state_dir=None if args.state_dir is None else os.fsdecode(args.state_dir),
                say=lambda line: print(line, flush=True))
        except InvalidConfigError as exc:
            raise CommandError(f"streams reset: {describe_error(exc)}", 2) from None
    return result.status


def _check_text(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Arguments that are names or configs must be UTF-8 (they go on the wire or into
    files as text); argv bytes that are not arrive as surrogates.  Paths may be any bytes."""
    from pylog.server.tools import _printable

    exempt = set(getattr(args, "bytes_args", ()))
    for name, value in vars(args).items():
        if name in exempt:
            continue
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    parser.error(f"argument --{name.replace('_', '-')}: {_printable(v)!r} is not valid UTF-8")


def _configure_logging(level: str) -> None:
    from pylog.server.server import configure_logging

    configure_logging(level)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the flush at exit is silent."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass


def _run(args: argparse.Namespace) -> int:
    from pylog.errors import PylogError
    from pylog.server.tools import CommandError, describe_error

    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"pylog: {describe_error(exc)}", file=sys.stderr)
        return exc.status
    except PylogError as exc:
        print(f"pylog: {describe_error(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _quiet_stdout()          # output piped into head & co: stop quietly
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"pylog: {describe_error(exc)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("pylog: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        print(f"pylog: unexpected error: {type(exc).__name__}: {exc} (a bug in pylog: please report it; "
              "--log-level DEBUG shows the traceback)", file=sys.stderr)
        if getattr(args, "log_level", None) == "DEBUG":
            traceback.print_exc()
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pylog`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.
    Usage errors raise ``SystemExit(2)`` (argparse's way), ``--help`` and ``--version``
    ``SystemExit(0)``."""
    for stream in (sys.stdout, sys.stderr):
        # Text that cannot be encoded (a path's undecodable bytes) is escaped, not fatal.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    argv = sys.argv[1:] if argv is None else list(argv)
    # `pylog serve` starts with the cyclic GC paused: the imports and the open of a data
    # dir allocate some 10^5 long-lived objects, and the collections they trigger (60+
    # on the way) find no garbage but cost ~5-10 ms of the start-up (#17).  Once it
    # listens, the server freezes what start-up built (gc.freeze: later collections do
    # not walk the broker's partitions again) and resumes the GC; a server that never
    # gets there resumes it here.
    pause_gc = argv[:1] == ["serve"] and gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        return _main(argv, _resume_gc if pause_gc else None)
    finally:
        if pause_gc and not gc.isenabled():
            gc.enable()


def _resume_gc() -> None:
    """End the start-up's GC pause: what start-up built goes to the permanent generation
    (it lives as long as the server), then the collector runs again."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _main(argv: list[str], started: Callable[[], None] | None) -> int:
    from pylog.server.tools import DEFAULT_BOOTSTRAP, DEFAULT_TIMEOUT

    # `pylog serve ...` builds serve's parser alone: every command's is ~10 ms of a
    # server's start-up (#17).  With the command word first, every later word is serve's,
    # so what is accepted and every message are the same.
    parser = build_parser("serve" if argv[:1] == ["serve"] else None)
    args = parser.parse_args(argv)
    args.given = frozenset(vars(args))
    if not args.connects:
        for opt in ("bootstrap_server", "timeout"):
            if opt in args.given:
                parser.error(f"--{opt.replace('_', '-')} does not apply to 'pylog {_command(args)}' "
                             "(it does not connect to a broker)")
    args.bootstrap_server = getattr(args, "bootstrap_server", DEFAULT_BOOTSTRAP)
    args.timeout = getattr(args, "timeout", DEFAULT_TIMEOUT)
    args.log_level = getattr(args, "log_level", None)
    _check_text(parser, args)
    if args.command != "serve":
        _configure_logging(args.log_level or "WARNING")
    args.on_listening = started
    return _run(args)


def _command(args: argparse.Namespace) -> str:
    words: list[Any] = [args.command, getattr(args, "action", None), getattr(args, "what", None)]
    return " ".join(w for w in words if w)


if __name__ == "__main__":
    sys.exit(main())
