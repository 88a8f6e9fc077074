"""``pylog`` with hostile arguments: no input ever ends in a traceback.

Every subcommand is run with arguments drawn from its grammar (hypothesis): the right
and wrong option names (misspelt, global ones in either position), values of the wrong
type or range, argv that is not UTF-8 (``os.fsdecode`` surrogates), missing files,
directories where files are expected and files where directories are, and stdin of any
bytes.  The assertion: the exit status is 0, 1 or 2, stderr holds no traceback and no
"unexpected error" (the CLI's last line of defence, which means a bug), and an error is
one ``pylog...: <message>`` line per problem.  The CLI runs in this process
(``cli.main(argv)``) for speed, against one ``pylog serve`` for the module; ``serve``
itself is run up to the point where it would start serving.

The issue's list of inputs that used to end in a traceback is checked case by case in
:func:`test_reported_inputs`, with the exit status and message each must give.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pylog import cli

_BAD = os.fsdecode(b"\xff\xfe-not-utf8")


@pytest.fixture(scope="module")
def env(module_server, tmp_path_factory):
    """The server, a topic with records, and hostile paths."""
    from pylog.records import RecordBatchBuilder
    from tests.wire import WireClient

    d = tmp_path_factory.mktemp("hostile")
    with WireClient(module_server.bootstrap) as c:
        c.create_topic("hostile", 2)
        bb = RecordBatchBuilder()
        for i in range(10):
            bb.append(None, None if i % 2 else b"k%d" % i, b"v%d" % i)
        c.produce("hostile", 0, bb.build())
    garbage = d / "garbage.log"
    garbage.write_bytes(bytes(range(256)) * 40)
    segment = d / "00000000000000000000.log"
    segment.write_bytes(bytes(bb.build()) + b"\x00\x00\x00\x07tail")
    index = d / "00000000000000000000.index"
    index.write_bytes(b"\x00\x00\x00\x01\x00\x00\x00\x10" * 3 + b"\x01")
    (d / "emptydir").mkdir()
    cwd = os.getcwd()
    os.chdir(d)        # demo's and serve's default data dirs land here
    try:
        yield {"bootstrap": module_server.bootstrap, "dir": str(d), "garbage": str(garbage),
               "segment": str(segment), "index": str(index), "emptydir": str(d / "emptydir")}
    finally:
        os.chdir(cwd)


_build_parser = cli.build_parser
_parsers: dict = {}


def _parser_built_once(only: str | None = None):
    """``cli.build_parser(only)``'s parser, built on the first call and reused: it
    depends on nothing but ``only``, and parsing leaves it as it was, so it is the parser
    each call would build (building it ~10 ms, 600 times, was half of the drawn runs'
    time).  ``cli.main`` runs as it is, parse and all."""
    if only not in _parsers:
        _parsers[only] = _build_parser(only)
    return _parsers[only]


def _serve_not(*args, **kwargs) -> int:
    """Stands in for ``pylog.server.server.run``: ``serve`` is run up to the point where
    it would start serving."""
    return 0


def run_cli(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """``pylog argv`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("pylog")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    fake_stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                mock.patch.object(sys, "stdin", fake_stdin), \
                mock.patch.object(cli, "build_parser", _parser_built_once), \
                mock.patch("pylog.server.server.run", _serve_not):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    return code, out.getvalue(), err.getvalue()


def check(argv: list[str], code: int, err: str) -> None:
    where = f"pylog {' '.join(map(repr, argv))}:\n{err}"
    assert code in (0, 1, 2), where
    assert "Traceback" not in err, where
    assert "unexpected error" not in err, where
    # Kafka's tools print an error's message, never a Python class name.
    assert not re.search(r"\b\w+(Error|Exception):", err), where


# -- the grammar ------------------------------------------------------------------------

INTS = ["-1", "0", "1", "2", "3", "14", "100", "2147483648", "9223372036854775808", "-9223372036854775809",
        "abc", "", "1e3", "nan", "inf", "0x10", " 5", "1_000", "\u0661\u0662", _BAD]
FLOATS = ["-1", "0", "0.001", "0.5", "5", "nan", "inf", "-inf", "1e308", "abc", "", _BAD]
KVS = ["a=b", "retention.ms=1000", "cleanup.policy=compact", "=x", "noeq", "segment.bytes=-5",
       "x=" + _BAD, _BAD + "=1", "message.max.bytes=abc"]
HEADERS = ["h=1", "=x", "noeq", _BAD + "=1", "k=" + "\u00e9"]
GROUPS = ["g1", "hostile-group", "", _BAD, "x" * 300]
TIMES = ["0", "4500", "2024-05-01T12:00:00", "2024-05-01T12:00:00.000Z", "2024-13-01T00:00:00",
         "yesterday", "-5", "99999999999999999999", "2024-05-01T12:00:00+02:00", _BAD]
OFFSETS = ["earliest", "latest", "0", "5", "100", "-5", "-1", "abc", _BAD, "9223372036854775808"]
MISSPELT = ["--topc", "--bootstrap-servr", "--partiton", "-x", "--", "---", "--records=", "--timeout=",
            "--no-such-option", "-", _BAD, "--" + _BAD]


def topics(e: dict) -> list[str]:
    return ["hostile", "nope", "created-by-cli", "a%b", "x" * 300, ".", "", _BAD, "hostile:0", "t" * 249]


def bootstraps(e: dict) -> list[str]:
    return [e["bootstrap"], "127.0.0.1:abc", "127.0.0.1:1", "127.0.0.1:0", "127.0.0.1:65536", ":9092",
            "localhost:1", "[::1]:1", "PLAINTEXT://" + e["bootstrap"], "", ",", _BAD, "127.0.0.1:-1"]


def paths(e: dict) -> list[str]:
    return ["/nonexistent/x", e["dir"], e["emptydir"], e["garbage"], e["segment"], e["index"], "/dev/null",
            e["garbage"] + "/below-a-file", os.path.join(e["dir"], "fresh-" + str(os.getpid())),
            os.path.join(e["dir"], _BAD), ""]


def grammar(e: dict) -> dict[tuple[str, ...], dict[str, list[str] | None]]:
    """subcommand -> option -> well-formed values (None: a flag); "" holds positional
    values.  Hostile values come from the pools above."""
    small = ["0", "1", "2", "5", "100"]
    pos = ["1", "2", "3"]
    ts = ["hostile", "nope", "created-by-cli"]
    common = {"--timeout": ["0.5", "5"], "--log-level": ["DEBUG", "info", "WARN", "error"]}
    conn = {"--bootstrap-server": [e["bootstrap"], "127.0.0.1:1", "PLAINTEXT://" + e["bootstrap"]], **common}
    files = [e["segment"], e["index"], e["garbage"], "/dev/null"]
    return {
        ("topics", "list"): {**conn, "--internal": None},
        ("topics", "create"): {**conn, "": ts, "--partitions": pos, "--replication-factor": ["1", "3"],
                               "--config": ["retention.ms=1000", "segment.bytes=-5", "nope=1"],
                               "--if-not-exists": None},
        ("topics", "describe"): {**conn, "": ts, "--all-configs": None, "--under-replicated-partitions": None,
                                 "--unavailable-partitions": None},
        ("topics", "delete"): {**conn, "": ["nope", "created-by-cli"]},
        ("topics", "alter"): {**conn, "": ts, "--partitions": pos, "--config": ["retention.ms=1000"],
                              "--delete-config": ["retention.ms", "nope"]},
        ("produce",): {**conn, "--topic": ts, "--partition": ["0", "1", "7"], "--format": ["line", "json"],
                       "--key-separator": ["|", "="], "--header": ["h=1", "k=\u00e9"], "--acks": ["-1", "0", "1"],
                       "--compression": ["none", "gzip", "lz4", "zstd", "snappy"], "--batch-size": small,
                       "--file": files + [e["dir"]]},
        ("consume",): {**conn, "--topic": ts, "--group": ["g1", "hostile-group"], "--partition": ["0", "1", "7"],
                       "--offset": ["earliest", "latest", "0", "5", "100"], "--from-beginning": None,
                       "--max-messages": pos, "--timeout-ms": ["0", "100"], "--format": ["value", "line", "json"],
                       "--print-key": None, "--print-headers": None, "--print-offset": None,
                       "--key-separator": ["\t", ","], "--assignor": ["range", "roundrobin", "cooperative-sticky"]},
        ("groups", "list"): {**conn, "--state": None},
        ("groups", "describe"): {**conn, "": ["g1", "hostile-group", "none"]},
        ("groups", "reset-offsets"): {**conn, "": ["g1", "hostile-group"],
                                      "--topic": ["hostile", "hostile:0,1", "hostile:9", "nope"],
                                      "--to-earliest": None, "--to-latest": None, "--to-offset": small,
                                      "--shift-by": ["-3", "3"], "--to-datetime": TIMES[:5], "--execute": None},
        ("groups", "delete"): {**conn, "": ["g1", "none"]},
        ("streams", "reset"): {**conn, "--application-id": ["g1", "hostile-group", "wc"],
                               "--input-topics": ["hostile", "hostile,nope"], "--intermediate-topics": ["nope"],
                               "--internal-topics": ["g1-x-changelog"], "--to-earliest": None, "--to-latest": None,
                               "--to-offset": small, "--shift-by": ["-3", "3"], "--to-datetime": TIMES[:5],
                               "--by-duration": ["PT1M", "P1DT2H"], "--from-file": files, "--dry-run": None,
                               "--force": None, "--data-dir": [e["dir"], e["emptydir"]],
                               "--state-dir": [e["emptydir"], e["garbage"]]},
        ("dump-log",): {"--log-level": common["--log-level"], "": files + [e["dir"], "/nonexistent"],
                        "--print-data": None, "--no-crc-check": None},
        ("bench", "produce"): {**conn, "--embedded": [e["emptydir"], e["garbage"]], "--topic": ts, "--json": None,
                               "--no-progress": None, "--record-size": small, "--batch-records": pos,
                               "--in-flight": pos, "--acks": ["-1", "0", "1"], "--compression": ["none", "lz4"],
                               "--partitions": pos, "--rate": ["1000000", "5000"], "--reporting-interval": ["1"]},
        ("bench", "consume"): {**conn, "--embedded": [e["emptydir"], e["garbage"]], "--topic": ts,
                               "--offset": small, "--max-bytes": ["1", "100000"], "--verify": None,
                               "--json": None, "--no-progress": None},
        ("demo",): {"--log-level": common["--log-level"], "--data-dir": [e["emptydir"], e["garbage"], e["dir"]],
                    "--topic": ts, "--segment-bytes": ["14", "100", "1000000"]},
        ("serve",): {"--log-level": common["--log-level"], "--data-dir": [e["emptydir"], e["garbage"]],
                     "--listen": ["127.0.0.1:0", e["bootstrap"]], "--advertised-listener": ["127.0.0.1:1"],
                     "--config": files + [e["dir"], "/nonexistent"],
                     "--override": ["num.partitions=2", "process.roles=broker", "no.such=1", "log.retention.ms=x"],
                     "--num-partitions": pos, "--no-auto-create-topics": None},
        ("--version",): {},
        ("--help",): {},
        (): {},
    }


#: Hostile values for any option: wrong types and ranges, not UTF-8, odd paths.
def hostile_values(e: dict) -> list[str]:
    return sorted(set(INTS + FLOATS + KVS + HEADERS + GROUPS + TIMES + OFFSETS + topics(e) + bootstraps(e)
                      + paths(e) + ["xml", "brotli", "sticky", "LOUD"]))


#: Options each command needs to get past argparse (drawn in the well-formed runs).
REQUIRED = {("topics", "create"): [""], ("topics", "delete"): [""], ("topics", "alter"): ["", "--partitions"],
            ("produce",): ["--topic"], ("consume",): ["--topic"], ("groups", "describe"): [""],
            ("groups", "reset-offsets"): ["", "--topic", "--to-earliest"], ("groups", "delete"): [""],
            ("streams", "reset"): ["--application-id"],
            ("dump-log",): [""]}


#: What keeps each drawn run short: appended last, so it wins over a drawn value of the
#: same option (a drawn bad value is still parsed, and refused, first).
BOUNDS = {
    ("consume",): ["--timeout-ms", "200", "--max-messages", "3", "--timeout", "5"],
    ("bench", "produce"): ["--records", "20", "--batch-records", "10", "--no-progress", "--timeout", "5",
                           "--rate", "1e9"],
    ("bench", "consume"): ["--records", "5", "--no-progress", "--timeout", "5"],
    ("demo",): ["--batches", "2", "--records", "3"],
}


@st.composite
def invocations(draw, e):
    """(command, argv, stdin): half the runs well-formed (each option with a value of its
    type, the required ones present), half with hostile names and values."""
    g = grammar(e)
    command = draw(st.sampled_from(sorted(g, key=lambda c: (c == (), c))))
    options = g[command]
    hostile = draw(st.booleans())
    bad = hostile_values(e)
    argv: list[str] = []
    if draw(st.booleans()):
        # Global options before the subcommand (both positions are accepted).
        opt = draw(st.sampled_from(["--bootstrap-server", "--timeout", "--log-level"]))
        good = grammar(e)[("topics", "list")][opt] or []
        argv += [opt, draw(st.sampled_from(bad if hostile else good))]
    argv += list(command)
    names = sorted(options)
    chosen = [] if hostile else list(REQUIRED.get(command, []))
    chosen += [draw(st.sampled_from(names)) for _ in range(draw(st.integers(0, 5)))] if names else []
    for name in chosen:
        if hostile and draw(st.integers(0, 3)) == 0:
            argv.append(draw(st.sampled_from(MISSPELT + bad)))            # a misspelt option, a stray word
            continue
        values = options[name]
        if values is None:
            argv.append(name)
            continue
        value = draw(st.sampled_from(bad if hostile and draw(st.booleans()) else values))
        if name == "":
            argv.append(value)
        elif draw(st.integers(0, 5)) == 0:
            argv.append(f"{name}={value}")
        else:
            argv += [name, value]
    argv += BOUNDS.get(command, [])
    if command and command[0] not in ("dump-log", "demo", "serve", "--version", "--help"):
        argv = ["--bootstrap-server", e["bootstrap"]] + argv      # a drawn one comes later and wins
    stdin = b""
    if command == ("produce",):
        stdin = draw(st.one_of(
            st.binary(max_size=200),
            st.lists(st.sampled_from([
                b'{"value":"x"}', b'{"key":"k","value":{"n":1},"headers":{"h":"1"}}', b'{"timestamp":"yesterday"}',
                b'{"partition":-1}', b'{"partition":7}', b'{"partition":"0"}', b'{"headers":[["a"]]}',
                b'{"headers":[[1,"x"]]}', b'[1,2]', b'"\\ud800"', b'{"value":"\\ud800"}', b'{', b'\xff\xfe',
                b'{"timestamp":1e30}', b'{"timestamp":-5}', b'{"extra":1}', b'null', b'k|v', b'',
                b'[' * 5000]), max_size=6).map(lambda xs: b"\n".join(xs) + b"\n")))
    return " ".join(command) or "(none)", argv, stdin


def _run_drawn(env, data):
    command, argv, stdin = data.draw(invocations(env), label="invocation")
    code, _out, err = run_cli(argv, stdin)
    check(argv, code, err)
    event(f"{command}: exit {code}")      # pytest --hypothesis-show-statistics


@settings(max_examples=int(os.environ.get("PYLOG_HOSTILE_EXAMPLES", "600")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_arguments_never_end_in_a_traceback(env, data):
    _run_drawn(env, data)


@pytest.mark.long
@settings(max_examples=3000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_arguments_long(env, data):
    _run_drawn(env, data)


# -- the list, case by case -----------------------------------------------------


def test_reported_inputs(env, tmp_path):
    b = ["--bootstrap-server", env["bootstrap"]]

    def expect(argv, code, *fragments, stdin=b""):
        got, out, err = run_cli(argv, stdin)
        check(argv, got, err)
        assert got == code, f"{argv}: exit {got}, expected {code}:\n{err}"
        lines = [x for x in err.splitlines() if x.startswith("pylog")]
        assert lines, err
        for frag in fragments:
            assert frag in err, f"{argv}: {frag!r} not in:\n{err}"
        return out, err

    expect(["topics", "list", "--bootstrap-server", "127.0.0.1:abc"], 2, "--bootstrap-server", "HOST:PORT")
    expect(["topics", "list", *b, "--timeout", "-1"], 2, "--timeout", "out of range")
    _, err = expect(["topics", "list", *b, "--timeout", "0"], 2, "greater than 0")
    assert "Operation now in progress" not in err
    expect(["produce", "--topic", "hostile", "--file", "/nonexistent", *b], 1, "/nonexistent: No such file")
    expect(["produce", "--topic", "hostile", "--file", str(tmp_path), *b], 1, "Is a directory")
    expect(["produce", "--topic", "hostile", "--format", "json", *b], 1, "line 1: not UTF-8",
           stdin=b"\xff\xfe{}\n")
    expect(["produce", "--topic", "hostile", "--format", "json", *b], 1, '"timestamp" must be milliseconds',
           stdin=b'{"value":"x","timestamp":"yesterday"}\n')
    expect(["groups", "reset-offsets", "g", "--topic", "orders:x", "--to-earliest", *b], 2, "'x'")
    expect(["bench", "produce", "--in-flight", "0", *b], 2, "--in-flight")
    expect(["demo", "--data-dir", env["garbage"]], 2, "is not a directory")
    expect(["demo", "--segment-bytes", "5"], 2, "--segment-bytes", "[14, 2147483647]")
    for bad in (["--records", "-5"], ["--record-size", "-1"], ["--rate", "-3"], ["--rate", "nan"]):
        expect(["bench", "produce", *b, *bad], 2, bad[0])
    expect(["produce", "--topic", "hostile", "--batch-size", "-1", *b], 2, "--batch-size")
    expect(["consume", "--topic", "hostile", "--offset", "-5", *b], 2, "non-negative")
    expect(["--log-level", "LOUD", "topics", "list"], 2, "LOUD")
    expect(["serve", "--data-dir", env["garbage"], "--listen", "127.0.0.1:0"], 2, "is not a directory")
    # A port in use is refused before the data directory is created.
    fresh = tmp_path / "not-created"
    expect(["serve", "--data-dir", str(fresh), "--listen", env["bootstrap"]], 1, "cannot listen on",
           "Address already in use")
    assert not fresh.exists()
    # Kafka's messages, not class names.
    _, err = expect(["topics", "create", "hostile", *b], 1, "already exists")
    assert "TopicAlreadyExistsError" not in err and err.startswith("pylog: ")
    # topics delete goes on past a missing topic, reports it, exits 1.
    assert run_cli(["topics", "create", "to-delete", *b])[0] == 0
    out, err = expect(["topics", "delete", "missing-1", "to-delete", "missing-2", *b], 1, "missing-1", "missing-2")
    assert "Deleted topic to-delete." in out
    # consume from past the end warns, as Kafka's consumer logs an offset reset.
    assert run_cli(["produce", "--topic", "ten", *b], stdin=b"x\n" * 10)[0] == 0
    expect(["consume", "--topic", "ten", "--offset", "100", "--timeout-ms", "100", *b], 0,
           "offset 100 is out of range for partition ten-0", "resetting to offset 10")


def test_global_options_either_position_and_version(env):
    b = env["bootstrap"]
    code, out, err = run_cli(["--bootstrap-server", b, "--timeout", "5", "topics", "list"])
    assert code == 0 and "hostile" in out.split(), err
    code, out, err = run_cli(["topics", "list", "--bootstrap-server", b])
    assert code == 0 and "hostile" in out.split(), err
    code, out, err = run_cli(["--bootstrap-server", b, "dump-log", env["segment"]])
    assert code == 2 and "does not apply" in err
    code, out, err = run_cli(["--version"])
    from pylog import __version__

    assert code == 0 and out.strip() == f"pylog {__version__}"


def test_produce_auto_creates_and_reads_any_bytes(env):
    b = ["--bootstrap-server", env["bootstrap"]]
    topic = f"auto-{os.getpid()}"
    code, _, err = run_cli(["produce", "--topic", topic, *b], stdin=b"caf\xe9\nok\n")
    assert code == 0 and "Produced 2 record(s)" in err, err
    code, out, err = run_cli(["consume", "--topic", topic, "--from-beginning", "--max-messages", "2",
                              "--timeout-ms", "3000", "--print-key", *b])
    assert code == 0, err
    assert out.splitlines() == ["null\tbase64:Y2Fm6Q==", "null\tok"]


def test_to_datetime_takes_iso_8601(env):
    from pylog.server.tools import datetime_ms

    assert datetime_ms("1714564800000") == 1714564800000
    assert datetime_ms("2024-05-01T12:00:00Z") == 1714564800000
    assert datetime_ms("2024-05-01T12:00:00.250+02:00") == 1714557600250
    b = ["--bootstrap-server", env["bootstrap"]]
    code, out, err = run_cli(["groups", "reset-offsets", "iso-g", "--topic", "hostile:0", "--to-datetime",
                              "2000-01-01T00:00:00", *b])
    assert code == 0, err
    assert out.splitlines()[1].split("\t") == ["iso-g", "hostile", "0", "0"]


def test_bench_counts_exactly_the_records_asked_and_reports_when_piped(env, capsys):
    from pylog.server import bench

    b = env["bootstrap"]
    topic = f"bench-exact-{os.getpid()}"
    bench.produce_wire(b, topic, 1000, batch_records=300, progress=False)
    res = bench.consume_wire(b, topic, 700, progress=False)
    assert res["records"] == 700          # the fetch returns whole batches: 900 records arrive
    capsys.readouterr()
    # Not a terminal (as here, and in CI): progress lines, one per reporting interval
    # (0 here: one per update), no carriage-return bar.
    bar = bench.Progress(1000, "consume", None, record_size=100, interval_ms=0)
    bar.update(400)
    bar.update(1000)
    bar.close()
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("consume: 400 of 1,000 records, ")
    assert err.splitlines()[1].startswith("consume: 1,000 of 1,000 records, ") and "MB/sec" in err
    assert "\r" not in err
    assert bench.Progress(10, "x", False, interval_ms=0).enabled is False


def test_bench_help_has_descriptions_and_defaults():
    for what in ("produce", "consume"):
        code, out, _ = run_cli(["bench", what, "--help"])
        assert code == 0
        assert "(default: 1000000)" in out and "records to produce or consume" in out


def test_percentiles_numpy():
    from pylog.server.bench import percentiles

    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p = percentiles(list(range(1, 101)))
    assert (p["p50"], p["p95"], p["p99"], p["max"]) == (51.0, 96.0, 100.0, 100.0)
    # Weighted: a batch's latency counts once per record of the batch.
    w = percentiles([1.0, 50.0], weights=[99, 1])
    assert w["p50"] == 1.0 and w["p95"] == 1.0 and w["max"] == 50.0
