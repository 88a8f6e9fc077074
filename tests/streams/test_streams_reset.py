"""``pylog streams reset`` (Kafka's application reset tool) and ``StreamsApp.clean_up``.

A word count app (a repartition topic, a persistent, logged count store) processes its
input; after a reset (input offsets to the start, internal topics deleted, local state
deleted) a rerun reprocesses the input from the start with fresh state: the output topic
holds exactly twice what the first run wrote, the second half equal to the first (counts
restart from 1).  Embedded (``--data-dir``) and against ``pylog serve``.  Also: a group with
an active member refuses the reset (``--force`` removes the member), a dry run changes
nothing, bad arguments exit 2 with a message, and Apache Kafka's own StreamsResetter
works on a pylog streams app's group over ``pylog serve``.
"""

from __future__ import annotations

import os

import pytest

import pylog
from pylog.cli import main
from pylog.errors import IllegalStateError
from pylog.streams import Materialized, Serdes, StreamsBuilder
from pylog.streams.reset import (clean_up_state, is_internal_topic, parse_duration_ms, parse_reset_plan,
                                 reset_application)
from kafka_ref.conftest import kafka_jars  # noqa: F401  (Apache Kafka's jars, fetched by Maven once)
from server.conftest import module_server  # noqa: F401  (one `pylog serve` for this module)
from server.util import unique
from streams.test_runtime import produce
from streams.test_runtime import read_all as read_records

S = Serdes.string()
L = Serdes.long()
LINES = [("a", "x y x"), ("b", "y z"), ("c", "x")]
STREAMS_RESETTER = "org.apache.kafka.tools.StreamsResetter"
#: What the word count writes for LINES (one update per word, in order per key).
EXPECTED = {"x": [1, 2, 3], "y": [1, 2], "z": [1]}


def word_count(app_id, state_dir):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    (b.stream(f"{app_id}-lines-in").flat_map_values(lambda v: v.split()).group_by(lambda k, w: w)
     .count(materialized=Materialized("counts", store_type="persistent")).to_stream()
     .to(f"{app_id}-counts-out", value_serde=L))
    return b.build(application_id=app_id, config={"commit.interval.ms": 50, "state.dir": str(state_dir)})


def setup_topics(client, app_id):
    client.create_topic(f"{app_id}-lines-in", 1)
    client.create_topic(f"{app_id}-counts-out", 1)
    produce(client, f"{app_id}-lines-in", LINES)


def read_all(client, topic):
    """(word, count) of ``topic`` in offset order."""
    return [(S.deserialize(r.key), L.deserialize(r.value))
            for r in sorted(read_records(client, topic), key=lambda r: r.offset)]


def by_word(pairs):
    out = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def committed(client, group, topic):
    res = client.fetch_offsets(group, {topic: [0]})
    return res.topics[topic][0].offset


def reset_args(app_id, *rest):
    return ["streams", "reset", "--application-id", app_id, "--input-topics", f"{app_id}-lines-in", *rest]


def run_reset(capsys, argv):
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_reset_embedded_reprocesses_from_the_start_with_fresh_state(tmp_path, capsys):
    data, state, app_id = str(tmp_path / "data"), tmp_path / "state", "wcreset"
    with pylog.open(data) as client:
        setup_topics(client, app_id)
        word_count(app_id, state).run(client, until_idle=True)
        first = read_all(client, f"{app_id}-counts-out")
        assert by_word(first) == EXPECTED
        assert committed(client, app_id, f"{app_id}-lines-in") == 3
        internal = sorted(t for t in client.list_topics() if is_internal_topic(app_id, t))
        assert internal == [f"{app_id}-counts-changelog", f"{app_id}-counts-repartition"]
    assert os.listdir(state / app_id)      # the persistent store's task directories

    # a dry run prints the plan and changes nothing
    status, out, _ = run_reset(capsys, reset_args(app_id, "--data-dir", data, "--state-dir", str(state),
                                                  "--dry-run"))
    assert status == 0
    assert f"Topic: {app_id}-lines-in Partition: 0 Offset: 0" in out
    assert f"{app_id}-counts-changelog" in out and "Dry run" in out
    with pylog.open(data) as client:
        assert committed(client, app_id, f"{app_id}-lines-in") == 3
        assert set(internal) <= set(client.list_topics())
    assert any(n[0].isdigit() for n in os.listdir(state / app_id))

    status, out, err = run_reset(capsys, reset_args(app_id, "--data-dir", data, "--state-dir", str(state)))
    assert status == 0, err
    assert f"Deleting inferred internal topics [{', '.join(internal)}]" in out
    assert not [n for n in os.listdir(state / app_id) if n[0].isdigit()]
    with pylog.open(data) as client:
        assert committed(client, app_id, f"{app_id}-lines-in") == 0
        assert not set(internal) & set(client.list_topics())
        word_count(app_id, state).run(client, until_idle=True)
        second = read_all(client, f"{app_id}-counts-out")
    assert len(second) == 2 * len(first)
    assert second[len(first):] == first       # counts restarted: the same output again


def test_reset_on_pylog_serve_refuses_an_active_member_then_force_removes_it(module_server, tmp_path,  # noqa: F811
                                                                             capsys):
    app_id = unique("wcserve")
    bootstrap = ["--bootstrap-server", module_server.bootstrap]
    with pylog.connect(module_server.bootstrap) as client:
        setup_topics(client, app_id)
        word_count(app_id, tmp_path / "state").run(client, until_idle=True, idle_polls=5)
        first = read_all(client, f"{app_id}-counts-out")
        assert by_word(first) == EXPECTED

        # a member in the application's group: the reset refuses, and changes nothing
        member = client.consumer(group_id=app_id, enable_auto_commit=False)
        member.subscribe([f"{app_id}-lines-in"])
        while not member.assignment():
            member.poll(timeout_ms=100)
        status, out, err = run_reset(capsys, reset_args(app_id, *bootstrap))
        assert status == 1
        assert f"Consumer group '{app_id}' is still active" in err and "--force" in err
        assert committed(client, app_id, f"{app_id}-lines-in") == 3
        assert f"{app_id}-counts-changelog" in client.list_topics()

        # --force removes the member first
        status, out, err = run_reset(capsys, reset_args(app_id, *bootstrap, "--force",
                                                        "--state-dir", str(tmp_path / "state")))
        assert status == 0, err
        assert f"Force deleting all active members in the group: {app_id}" in out
        assert client.describe_groups([app_id])[0].members == []
        member.close(autocommit=False)
        assert committed(client, app_id, f"{app_id}-lines-in") == 0
        assert not [t for t in client.list_topics() if is_internal_topic(app_id, t)]

        word_count(app_id, tmp_path / "state").run(client, until_idle=True, idle_polls=5)
        second = read_all(client, f"{app_id}-counts-out")
    assert len(second) == 2 * len(first)
    assert second[len(first):] == first


def test_offset_choices_and_intermediate_topics(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("in", 2)
        client.create_topic("mid", 1)
        client.create_topic("r-x-repartition", 1)      # named like an internal topic, but an input
        p = client.producer()
        for i in range(10):
            p.send("in", value=b"v", partition=i % 2, timestamp_ms=1000 + i)
            p.send("mid", value=b"v")
        p.flush()
        p.close()
        lines = []

        def reset(**kw):
            lines.clear()
            return reset_application(client, "r", input_topics=["in", "r-x-repartition"], say=lines.append, **kw)

        assert reset(to_latest=True).input_offsets[("in", 0)] == 5
        assert reset(to_offset=3).input_offsets == {("in", 0): 3, ("in", 1): 3, ("r-x-repartition", 0): 0}
        assert reset(shift_by=-1).input_offsets[("in", 1)] == 2
        assert reset(to_offset=99).input_offsets[("in", 0)] == 5          # clamped to the end
        assert any("past the log end offset" in x for x in lines)
        # the first record at or after t: in-0 holds t=1000,1002,..; in-1 t=1001,1003,..
        assert reset(to_datetime_ms=1004).input_offsets == {("in", 0): 2, ("in", 1): 2, ("r-x-repartition", 0): 0}
        assert reset(by_duration_ms=1, now_ms=1006).input_offsets[("in", 1)] == 2
        assert reset(plan={("in", 0): 1, ("in", 1): 4, ("r-x-repartition", 0): 0}).input_offsets[("in", 1)] == 4
        res = reset(intermediate_topics=["mid", "gone"])
        assert res.intermediate_offsets == {("mid", 0): 10} and res.missing_topics == ["gone"] and res.status == 1
        assert committed(client, "r", "mid") == 10
        assert res.deleted_topics == []          # the input named like an internal topic is kept
        assert "r-x-repartition" in client.list_topics()


def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    data = tmp_path / "data"
    with pylog.open(data) as client:
        client.create_topic("bad-in", 1)
        client.create_topic("bad-x-changelog", 1)
        client.create_topic("other", 1)
    base = ["streams", "reset", "--application-id", "bad", "--data-dir", str(data)]
    plan = tmp_path / "plan.csv"
    plan.write_text("bad-in,zero,1\n")
    cases = [
        (base + ["--to-earliest", "--to-latest"], "not allowed with argument"),
        (["streams", "reset", "--data-dir", str(data)], "--application-id"),
        (base + ["--bootstrap-server", "127.0.0.1:1"], "not both"),
        (["streams", "reset", "--application-id", "bad", "--data-dir", str(tmp_path / "nope")],
         "not a pylog data directory"),
        (["streams", "reset", "--application-id", "bad", "--data-dir", str(tmp_path)], "not a pylog data directory"),
        (["streams", "reset", "--application-id", "a b", "--data-dir", str(data)], "application id 'a b' is illegal"),
        (base + ["--internal-topics", "other"], "not internal topics of application 'bad'"),
        (base + ["--by-duration", "15 minutes"], "not an ISO 8601 duration"),
        (base + ["--input-topics", "bad-in", "--from-file", str(plan)], "must be integers"),
        (base + ["--to-offset", "-1"], "out of range"),
        (base + ["--input-topics", "bad in"], "illegal"),
    ]
    for argv, message in cases:
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        err = capsys.readouterr().err
        assert status == 2, (argv, err)
        assert message in err, (argv, err)
        assert err.startswith("pylog: ") and "Traceback" not in err
    with pylog.open(data) as client:                # nothing was deleted
        assert "bad-x-changelog" in client.list_topics()


def test_clean_up_deletes_task_and_global_directories_but_not_the_process_id(tmp_path):
    state = tmp_path / "state"
    for d in ("0_0/rocksdb/counts", "1_3", "global/rocksdb/g", "__named__0_1"):
        (state / "app" / d).mkdir(parents=True)
    (state / "app" / "kafka-streams-process-metadata").write_text('{"processId": "x"}')
    (state / "app" / "not-a-task").mkdir()
    app = word_count("app", state)
    removed = app.clean_up()
    assert sorted(os.path.basename(p) for p in removed) == ["0_0", "1_3", "__named__0_1", "global"]
    assert sorted(os.listdir(state / "app")) == ["kafka-streams-process-metadata", "not-a-task"]
    assert clean_up_state(str(state), "absent") == []


def test_clean_up_refuses_while_the_app_runs(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        setup_topics(client, "cu")
        app = word_count("cu", tmp_path / "state")
        seen = []

        def during(new, _old):
            if new is app.State.RUNNING:
                try:
                    app.clean_up()
                except IllegalStateError as exc:
                    seen.append(str(exc))

        app.set_state_listener(during)
        app.run(client, until_idle=True)
    assert seen and "stop it first" in seen[0]
    assert app.clean_up()        # stopped: allowed


def test_helpers_parse_as_kafka_does():
    assert parse_duration_ms("PT15M") == 900_000
    assert parse_duration_ms("P1DT2H") == 93_600_000
    assert parse_duration_ms("PT1.5S") == 1500
    assert parse_duration_ms("-PT10S") == -10_000
    for bad in ("P", "PT", "15M", "P1H", ""):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)
    assert parse_reset_plan("t,0,5\nt,1,7\n") == {("t", 0): 5, ("t", 1): 7}
    with pytest.raises(ValueError):
        parse_reset_plan("")
    assert is_internal_topic("app", "app-counts-changelog")
    assert is_internal_topic("app", "app-KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic")
    assert is_internal_topic("app", "app-j-subscription-response-topic")
    assert not is_internal_topic("app", "other-counts-changelog")
    assert not is_internal_topic("app", "app-counts")


def test_kafkas_own_streams_resetter_resets_a_pylog_app_on_pylog_serve(kafka_jars, module_server,  # noqa: F811
                                                                       tmp_path):
    """Apache Kafka's StreamsResetter (kafka-streams-application-reset.sh, from the jars
    the kafka_ref fixture fetches) on a pylog streams app's group over ``pylog serve``:
    it resets the input offsets and deletes the internal topics, and a rerun (after
    ``clean_up``) writes the same output again."""
    app_id = unique("wcjava")
    with pylog.connect(module_server.bootstrap) as client:
        setup_topics(client, app_id)
        word_count(app_id, tmp_path / "state").run(client, until_idle=True, idle_polls=5)
        first = read_all(client, f"{app_id}-counts-out")
        assert by_word(first) == EXPECTED
        out = kafka_jars.check(STREAMS_RESETTER, "--bootstrap-server", module_server.bootstrap,
                               "--application-id", app_id, "--input-topics", f"{app_id}-lines-in")
        assert f"Topic: {app_id}-lines-in Partition: 0 Offset: 0" in out
        assert f"{app_id}-counts-changelog" in out
        assert committed(client, app_id, f"{app_id}-lines-in") == 0
        assert not [t for t in client.list_topics() if is_internal_topic(app_id, t)]
        app = word_count(app_id, tmp_path / "state")
        assert app.clean_up()
        app.run(client, until_idle=True, idle_polls=5)
        second = read_all(client, f"{app_id}-counts-out")
    assert len(second) == 2 * len(first)
    assert second[len(first):] == first


def test_force_removes_static_and_dynamic_members_and_dry_run_removes_none(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        setup_topics(client, "st")
        members = []
        for instance in ("instance-1", None):
            c = client.consumer(group_id="st", enable_auto_commit=False,
                                **({"group_instance_id": instance} if instance else {}))
            c.subscribe(["st-lines-in"])
            members.append(c)
        group = client.describe_groups(["st"])[0]
        while len(group.members) < 2 or group.state != "Stable":
            for c in members:
                c.poll(timeout_ms=50)
            group = client.describe_groups(["st"])[0]
        described = group.members
        assert sorted(str(m.group_instance_id) for m in described) == ["None", "instance-1"]
        lines = []
        with pytest.raises(pylog.errors.NonEmptyGroupError):
            reset_application(client, "st", input_topics=["st-lines-in"], say=lines.append)
        res = reset_application(client, "st", input_topics=["st-lines-in"], force=True, dry_run=True,
                                say=lines.append)
        assert res.removed_members == [] and client.describe_groups(["st"])[0].members
        res = reset_application(client, "st", input_topics=["st-lines-in"], force=True, say=lines.append)
        assert sorted(res.removed_members) == sorted(m.group_instance_id or m.member_id for m in described)
        assert client.describe_groups(["st"])[0].members == []
        assert committed(client, "st", "st-lines-in") == 0
        for c in members:
            c.close(autocommit=False)
