"""The ``pylog`` subcommands that run or talk to a server: ``serve``, ``topics``,
``produce``, ``consume``, ``groups``, ``dump-log`` and ``bench``.

Every tool except ``serve``, ``dump-log`` and ``bench --embedded`` speaks the Kafka
protocol to ``--bootstrap-server`` (default ``127.0.0.1:9092``) through
:mod:`pylog.server.wire_client`, so it works against ``pylog serve`` and Apache Kafka
alike.  Output is plain text, one item per line, for people and for ``grep``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_commands"]

_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def add_commands(sub: Any) -> None:
    """Register the subcommands on ``pylog``'s argparse subparsers."""
    _add_serve(sub)


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
