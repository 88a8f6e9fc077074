"""``pylog bench produce|consume --compare-kafka`` (issue #16): the same workload against
pylog and the session's Apache Kafka broker, both columns printed; and its argument
errors, each a one-line usage error (exit 2) that says what to pass.

The smoke runs are tiny (a few thousand records, one round): they prove the command
works end to end, not how fast either side is (that is benches/bench_vs_kafka.py)."""

from __future__ import annotations

import json
import re

import pytest

from pylog.cli import main
from pylog.server import kafka_peer
from server.util import unique

pytestmark = pytest.mark.bench


def _row(out: str, label: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(label))
    return line[len(label):].split()


def test_produce_prints_pylog_and_kafka_side_by_side(kafka_broker, capsys):
    """pylog's side is a `pylog serve` the command starts (so its CPU, RSS and start
    time are known); Kafka's is the session broker (given, so they are not)."""
    topic = unique("cmp-produce")
    code = main(["bench", "produce", "--compare-kafka", "--kafka-bootstrap", kafka_broker.bootstrap,
                 "--topic", topic, "--records", "3000", "--batch-records", "500", "--rounds", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("produce: 3,000 records, 100 B records")
    assert lines[1].split() == ["pylog", "kafka", "pylog/kafka"]
    pylog_rate, kafka_rate, ratio = _row(out, "records/s")
    pylog_rate, kafka_rate = (int(v.replace(",", "")) for v in (pylog_rate, kafka_rate))
    assert pylog_rate > 0 and kafka_rate > 0
    assert re.fullmatch(r"\d+\.\d\dx", ratio)
    cpu = _row(out, "server CPU ms/MB")
    assert cpu[1:] == ["-", "-"] and float(cpu[0]) >= 0
    rss = _row(out, "server RSS MB")
    assert rss[1:] == ["-", "-"] and int(rss[0]) > 0
    # Progress on stderr names both sides; the warm-up run comes before the measured one.
    assert "warm-up run on pylog" in err and "warm-up run on kafka" in err
    assert "round 1/1: pylog" in err and "round 1/1: kafka" in err
    # Both brokers hold the records: one warm-up run plus one measured run each.
    from pylog.server.tools import connect

    client = connect(kafka_broker.bootstrap, 30, "test")
    try:
        assert client.high_watermark(topic, 0) == 6000
    finally:
        client.close()


def test_consume_fills_both_sides_and_reports_json(kafka_broker, module_server, capsys):
    topic = unique("cmp-consume")
    code = main(["bench", "consume", "--compare-kafka", "--kafka-bootstrap", kafka_broker.bootstrap,
                 "--bootstrap-server", module_server.bootstrap, "--topic", topic, "--records", "2000",
                 "--rounds", "2", "--json", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    res = json.loads(out)
    assert (res["workload"], res["records"], res["rounds"]) == ("consume", 2000, 2)
    for side in ("pylog", "kafka"):
        assert res[side]["records_per_s"] > 0 and res[side]["mb_per_s"] > 0
        # Neither server was started by the command: no process figures.
        assert res[side]["server_rss_mb"] is None and res[side]["start_s"] is None
    assert res["ratio"]["records_per_s"] == pytest.approx(
        res["pylog"]["records_per_s"] / res["kafka"]["records_per_s"])


@pytest.mark.parametrize("argv, message", [
    (["bench", "produce", "--kafka-bootstrap", "127.0.0.1:9"], "--kafka-bootstrap applies only with --compare-kafka"),
    (["bench", "consume", "--kafka-classpath", "/x"], "--kafka-classpath applies only with --compare-kafka"),
    (["bench", "produce", "--rounds", "2"], "--rounds applies only with --compare-kafka"),
    (["bench", "produce", "--compare-kafka", "--embedded"], "not with --embedded"),
    (["bench", "produce", "--compare-kafka", "--kafka-bootstrap", "127.0.0.1:9", "--kafka-classpath", "/x"],
     "not both"),
    (["bench", "produce", "--compare-kafka", "--kafka-classpath", "/nonexistent/kafka"],
     "--kafka-classpath /nonexistent/kafka: no such file or directory"),
])
def test_argument_errors_are_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("pylog: bench: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["bench", "produce", "--compare-kafka", "--rounds", "0"],
    ["bench", "consume", "--compare-kafka", "--kafka-bootstrap", "no-port"],
])
def test_bad_values_are_argparse_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("pylog: argument --")


def test_no_kafka_to_be_had_says_what_to_pass(monkeypatch, capsys):
    """No --kafka-bootstrap, no --kafka-classpath and no Maven on PATH."""
    real_which = kafka_peer.shutil.which
    monkeypatch.setattr(kafka_peer.shutil, "which", lambda name: None if name == "mvn" else real_which(name))
    assert main(["bench", "produce", "--compare-kafka", "--records", "10"]) == 2
    err = capsys.readouterr().err
    assert "--kafka-bootstrap HOST:PORT" in err and "--kafka-classpath" in err and "mvn" in err


def test_classpath_forms(tmp_path):
    """A Kafka distribution's directory (libs/*), a directory of jars, a classpath file,
    and a classpath string are each taken as what they are."""
    dist = tmp_path / "kafka_2.13-4.4.0"
    (dist / "libs").mkdir(parents=True)
    assert kafka_peer.resolve_classpath(str(dist)) == str(dist / "libs" / "*")
    jars = tmp_path / "jars"
    jars.mkdir()
    assert kafka_peer.resolve_classpath(str(jars)) == str(jars / "*")
    cp_file = tmp_path / "classpath.txt"
    cp_file.write_text("/a/x.jar:/b/y.jar\n")
    assert kafka_peer.resolve_classpath(str(cp_file)) == "/a/x.jar:/b/y.jar"
    assert kafka_peer.resolve_classpath("/a/x.jar:/b/y.jar") == "/a/x.jar:/b/y.jar"
    cp_file.write_text("")
    with pytest.raises(kafka_peer.KafkaUnavailable, match="is empty"):
        kafka_peer.resolve_classpath(str(cp_file))


def test_side_by_side_table():
    text = kafka_peer.side_by_side("t", [("a", 2.0, 4.0, ".1f"), ("bb", None, 1.0, ".1f"), ("c", 1.0, 0.0, ".0f")])
    assert text.splitlines() == [
        "t",
        "    pylog  kafka  pylog/kafka",
        "a     2.0    4.0        0.50x",
        "bb      -    1.0            -",
        "c       1      0            -",
    ]


@pytest.mark.long
def test_bench_vs_kafka_runs_every_figure(kafka_jars):
    """benches/bench_vs_kafka.py at its smoke sizes (PYLOG_BENCH_SMALL): it starts its own
    servers (two cold starts and one measured pair, a few minutes of JVM on 2 cores),
    hence long.  Every figure has both sides and a ratio, and each of the ceiling's has
    its value and both servers' ratios to it."""
    import os
    import pathlib
    import subprocess
    import sys

    from benches.bench_vs_kafka import CEILING_FIGURES, FIGURES

    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYLOG_BENCH_SMALL="1")
    proc = subprocess.run([sys.executable, "-m", "benches.bench_vs_kafka", "1"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for _key, label, _spec, goal in FIGURES:
        pylog_value, kafka_value, ratio, *rest = _row(proc.stdout, label)
        assert float(pylog_value.replace(",", "")) >= 0 and float(kafka_value.replace(",", "")) >= 0
        assert ratio.endswith("x") or ratio == "-"
        assert bool(rest) == (goal is not None)
    # Then the same clients against the ceiling: its figure and both servers' ratios to it.
    ceiling = proc.stdout.split("(benches.ceiling_server)", 1)[1]
    labels = {key: label for key, label, *_ in FIGURES}
    for key in CEILING_FIGURES:
        value, pylog_ratio, kafka_ratio = _row(ceiling.split("\n", 1)[1], labels[key])
        assert float(value.replace(",", "")) > 0
        assert pylog_ratio.endswith("x") and kafka_ratio.endswith("x")


def test_kafka_that_cannot_start_is_a_failure_with_its_output(tmp_path, capsys):
    """A classpath without Kafka's jars: the storage tool fails; exit 1 with the JVM's
    own words, and nothing left running."""
    cp = tmp_path / "classpath.txt"
    cp.write_text(str(tmp_path / "missing.jar"))
    assert main(["bench", "produce", "--compare-kafka", "--kafka-classpath", str(cp), "--records", "10"]) == 1
    err = capsys.readouterr().err
    assert "kafka-storage format failed" in err and "kafka.tools.StorageTool" in err
