"""Rebalance across three instances of one streams app, each a process of its own,
against ``pylog serve``, with a standby of every task (``num.standby.replicas=1``);
interactive queries (routed with ``query_metadata_for_key``, as a Kafka Streams app's
REST layer routes them) answer during and after each move, never wrongly.

* two instances share six tasks; each holds a standby of the other's tasks, and the
  standby answers stale-store queries with the active's counts;
* a third joins: only the two tasks it needs move to it, the others stay;
* one leaves: its tasks go to the instances holding their standbys (even past their
  share of tasks), which take the standby's state over (no restore from the
  changelog's beginning).

Run as a script, this module is one instance: it serves its queries over HTTP at its
``application.server`` (``GET /get?key=&stale=``, ``/meta?key=``, ``/state``) and runs
the app until SIGTERM.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC_PARTITIONS = 6


# ---- the instance (run as a script) ---------------------------------------------------------

def instance_main(argv):
    import argparse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    import pylog
    from pylog.streams import (InvalidStateStoreError, Materialized, QueryableStoreTypes, Serdes,
                               StoreQueryParameters, StreamsBuilder)

    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--session-timeout-ms", type=int, default=10_000)
    p.add_argument("--exactly-once", action="store_true")
    p.add_argument("--persistent", action="store_true")
    p.add_argument("--probing-rebalance-interval-ms", type=int, default=600_000)
    a = p.parse_args(argv)
    if os.environ.get("REBALANCE_APP_LOG"):
        import logging
        logging.basicConfig(level=os.environ["REBALANCE_APP_LOG"], stream=sys.stderr)
    s = Serdes.string()
    kv = StoreQueryParameters.from_name_and_type("counts", QueryableStoreTypes.key_value_store())
    restores = []
    holder = {}

    class Listener:
        def on_restore_start(self, tp, store, start, end):
            restores.append([tp[0], tp[1], store, start, end])

        def on_batch_restored(self, *args):
            pass

        def on_restore_end(self, *args):
            pass

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            app = holder["app"]
            status, body = 200, {}
            try:
                if url.path == "/get":
                    params = kv.enable_stale_stores() if q.get("stale") == "1" else kv
                    body = {"value": app.store(params).get(q["key"])}
                elif url.path == "/meta":
                    m = app.query_metadata_for_key("counts", q["key"], s)
                    body = {"active": str(m.active_host), "standbys": sorted(map(str, m.standby_hosts)),
                            "partition": m.partition}
                elif url.path == "/state":
                    with app.iq_lock:
                        body = {"state": app.state.name, "active": sorted(f"{g}_{p}" for g, p in app.tasks),
                                "standby": sorted(f"{g}_{p}" for g, p in app.standbys),
                                "restores": list(restores)}
                else:
                    status, body = 404, {"error": url.path}
            except InvalidStateStoreError as exc:
                status, body = 503, {"error": str(exc)}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = http.server_address[1]
    b = StreamsBuilder({"default.key.serde": s, "default.value.serde": s})
    b.stream(a.topic).group_by_key().count(
        materialized=Materialized("counts", store_type="persistent" if a.persistent else "in_memory"))
    config = {"state.dir": a.state_dir, "commit.interval.ms": 100, "num.standby.replicas": 1,
              "application.server": f"127.0.0.1:{port}", "session.timeout.ms": a.session_timeout_ms,
              "heartbeat.interval.ms": 300, "probing.rebalance.interval.ms": a.probing_rebalance_interval_ms}
    if a.exactly_once:
        config["processing.guarantee"] = "exactly_once_v2"
    app = b.build(application_id=a.app_id, config=config)
    app.set_global_state_restore_listener(Listener())
    holder["app"] = app
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"port {port}", flush=True)
    with pylog.connect(a.bootstrap) as client:
        app.run(client, poll_timeout_ms=50)
    http.shutdown()
    print("stopped", flush=True)


if __name__ == "__main__":
    instance_main(sys.argv[1:])
    sys.exit(0)


# ---- the test --------------------------------------------------------------------------------

import pylog  # noqa: E402
from server.conftest import module_server, wait_until  # noqa: E402,F401  (one `pylog serve` for this module)

from .test_restore_listener import produce  # noqa: E402


class Instance:
    """One app instance in a subprocess, and its HTTP query endpoint."""

    def __init__(self, bootstrap, app_id, topic, state_dir, session_timeout_ms=10_000, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--bootstrap", bootstrap, "--app-id", app_id, "--topic", topic,
             "--state-dir", str(state_dir), "--session-timeout-ms", str(session_timeout_ms), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)
        line = self.proc.stdout.readline()
        assert line.startswith("port "), f"instance did not start: {line!r} {self.proc.stderr.read()}"
        self.host = f"127.0.0.1:{int(line.split()[1])}"

    def get(self, path):
        """(status, JSON body) of ``GET path``."""
        try:
            with urllib.request.urlopen(f"http://{self.host}{path}", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def state(self):
        return self.get("/state")[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0 and "stopped" in out, f"instance {self.host} failed:\n{err[-5000:]}"
        assert "Traceback" not in err, err[-5000:]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=60)


def settled(instances, n):
    """The instances' tasks once the group settled: every task active on one and standby
    on another, the same routing metadata everywhere, every instance RUNNING."""
    states = {i.host: i.state() for i in instances}
    if any(s["state"] != "RUNNING" for s in states.values()):
        return None
    active = [t for s in states.values() for t in s["active"]]
    standby = [t for s in states.values() for t in s["standby"]]
    tasks = sorted(f"0_{p}" for p in range(TOPIC_PARTITIONS))
    if sorted(active) != tasks or sorted(standby) != tasks:
        return None
    if any(set(s["active"]) & set(s["standby"]) for s in states.values()):
        return None
    metas = [i.get("/meta?key=k0")[1] for i in instances]
    if any(m != metas[0] for m in metas) or metas[0]["active"] not in states:
        return None
    if len(states) != n or any(not s["active"] for s in states.values()):
        return None
    return states


def answer(instances, key, stale=False):
    """Route ``key`` as an app's REST layer would: metadata from any instance, then the
    active host (or, stale, a standby host).  None when the answer is "retry"."""
    by_host = {i.host: i for i in instances}
    status, meta = random.choice(instances).get(f"/meta?key={key}")
    if status != 200:
        return None
    hosts = meta["standbys"] if stale else [meta["active"]]
    if not hosts or hosts[0] not in by_host:
        return None
    status, body = by_host[hosts[0]].get(f"/get?key={key}&stale={int(stale)}")
    return body["value"] if status == 200 else None


def all_answer(instances, expected, stale=False):
    return all(answer(instances, k, stale) == n for k, n in expected.items())


class Querier(threading.Thread):
    """Queries keys in a loop while the group moves tasks: every answer that comes back
    must be the key's count (a retriable "not here now" is allowed)."""

    def __init__(self, instances, expected):
        super().__init__(daemon=True)
        self.instances = list(instances)
        self.expected = expected
        self.stop_flag = threading.Event()
        self.right = 0
        self.wrong = []

    def run(self):
        keys = sorted(self.expected)
        while not self.stop_flag.is_set():
            k = random.choice(keys)
            for stale in (False, True):
                try:
                    got = answer(self.instances, k, stale)
                except (OSError, urllib.error.URLError):
                    continue    # an instance stopping
                if got is None:
                    continue
                if got == self.expected[k]:
                    self.right += 1
                else:
                    self.wrong.append((k, stale, got))

    def finish(self):
        self.stop_flag.set()
        self.join(timeout=30)
        assert not self.wrong, f"wrong answers during the move: {self.wrong[:10]}"
        assert self.right > 0


def test_three_instances_move_tasks_stickily_with_standbys_and_queries_answer_throughout(module_server, tmp_path):
    app_id = f"rebalance-{uuid.uuid4().hex[:8]}"
    topic = f"{app_id}-words"
    instances = []
    with pylog.connect(module_server.bootstrap) as client:
        client.create_topic(topic, TOPIC_PARTITIONS)
        keys = [f"k{i}" for i in range(30)]
        first = [k for i, k in enumerate(keys) for _ in range(i % 3 + 1)]
        produce(client, topic, first)
        expected = {k: first.count(k) for k in keys}
        try:
            a = Instance(module_server.bootstrap, app_id, topic, tmp_path / "a")
            b = Instance(module_server.bootstrap, app_id, topic, tmp_path / "b")
            instances = [a, b]
            two = wait_until(lambda: settled(instances, 2), timeout=60, what="two instances settled")
            assert [len(s["active"]) for s in two.values()] == [3, 3]
            wait_until(lambda: all_answer(instances, expected), timeout=60, what="the counts")
            # every key's standby is the other instance, and it answers stale queries alike
            wait_until(lambda: all_answer(instances, expected, stale=True), timeout=60, what="standby answers")
            status, meta = a.get("/meta?key=k1")
            assert status == 200 and len(meta["standbys"]) == 1 and meta["standbys"][0] != meta["active"]

            # a third instance joins while queries run
            querier = Querier(instances, expected)
            querier.start()
            c = Instance(module_server.bootstrap, app_id, topic, tmp_path / "c")
            instances.append(c)
            three = wait_until(lambda: settled(instances, 3), timeout=60, what="three instances settled")
            querier.instances = list(instances)
            wait_until(lambda: all_answer(instances, expected), timeout=60, what="the counts after the join")
            querier.finish()
            for inst in (a, b):     # the old instances kept what they had; the newcomer took two
                assert set(three[inst.host]["active"]) <= set(two[inst.host]["active"])
            assert len(three[c.host]["active"]) == 2
            wait_until(lambda: all_answer(instances, expected, stale=True), timeout=60,
                       what="standby answers after the join")

            # b leaves: its tasks go where their standbys are, which take the state over
            holders = {t: host for host, s in three.items() for t in s["standby"] if t in three[b.host]["active"]}
            restores_before = {i.host: len(i.state()["restores"]) for i in (a, c)}
            querier = Querier([a, c], expected)
            querier.start()
            b.stop()
            instances = [a, c]
            after = wait_until(lambda: settled(instances, 2), timeout=60, what="two instances settled after b left")
            querier.finish()
            for task, host in holders.items():
                assert task in after[host]["active"], f"task {task} did not go to its standby on {host}"
            for i in (a, c):
                new = after[i.host]["restores"][restores_before[i.host]:]
                taken = {int(t.split("_")[1]) for t, h in holders.items() if h == i.host}
                assert not [r for r in new if r[1] in taken and r[3] == 0], \
                    f"{i.host} restored a taken-over task from the beginning: {new}"
            wait_until(lambda: all_answer(instances, expected), timeout=60, what="the counts after the leave")

            # and the app goes on counting
            second = keys[:10]
            produce(client, topic, second)
            for k in second:
                expected[k] += 1
            wait_until(lambda: all_answer(instances, expected), timeout=60, what="the counts of new input")
            wait_until(lambda: all_answer(instances, expected, stale=True), timeout=60, what="standbys of new input")
            for inst in instances:
                inst.stop()
        finally:
            for inst in instances:
                inst.kill()


def test_a_killed_instance_s_tasks_are_taken_over_by_their_standbys_which_answer_meanwhile(module_server,  # noqa: F811
                                                                                            tmp_path):
    """kill -9: until the group notices (the session timeout), the dead instance's keys
    are answered by their standbys (stale stores); then the standbys become the active
    tasks, with no restore from the beginning, and counting goes on."""
    app_id = f"rebalance-kill-{uuid.uuid4().hex[:8]}"
    topic = f"{app_id}-words"
    instances = []
    with pylog.connect(module_server.bootstrap) as client:
        client.create_topic(topic, TOPIC_PARTITIONS)
        keys = [f"k{i}" for i in range(30)]
        produce(client, topic, keys)
        expected = {k: 1 for k in keys}
        try:
            a = Instance(module_server.bootstrap, app_id, topic, tmp_path / "a", session_timeout_ms=2000)
            b = Instance(module_server.bootstrap, app_id, topic, tmp_path / "b", session_timeout_ms=2000)
            instances = [a, b]
            wait_until(lambda: settled(instances, 2), timeout=60, what="two instances settled")
            wait_until(lambda: all_answer(instances, expected, stale=True), timeout=60, what="standby answers")
            restores_before = len(b.state()["restores"])
            a.kill()
            instances = [b]
            # the dead instance's keys: b's standbys answer, before and after the group notices
            for k in keys:
                status, body = b.get(f"/get?key={k}&stale=1")
                assert status == 200 and body["value"] == 1
            after = wait_until(lambda: (lambda s: s if sorted(s["active"]) == sorted(
                f"0_{p}" for p in range(TOPIC_PARTITIONS)) else None)(b.state()), timeout=60,
                what="b running every task")
            assert not [r for r in after["restores"][restores_before:] if r[3] == 0], after["restores"]
            produce(client, topic, keys[:3])
            expected.update({k: 2 for k in keys[:3]})
            wait_until(lambda: all(b.get(f"/get?key={k}")[1].get("value") == n for k, n in expected.items()),
                       timeout=60, what="b counting on")
            b.stop()
        finally:
            for inst in instances:
                inst.kill()


@pytest.mark.long
@pytest.mark.parametrize("seed", [20261207])
def test_exactly_once_counts_survive_kill_9_of_instances_with_standbys(module_server, tmp_path, seed):  # noqa: F811
    """Three exactly-once instances with persistent stores and standbys; one is killed
    with SIGKILL and restarted on its state directory, again and again, while input
    arrives.  Every word is counted exactly once: the final counts, read through
    interactive queries, equal the input."""
    rnd = random.Random(seed)
    print(f"seed {seed}")
    app_id = f"rebalance-eos-{uuid.uuid4().hex[:8]}"
    topic = f"{app_id}-words"
    keys = [f"k{i}" for i in range(50)]
    expected = {k: 0 for k in keys}
    extra = ("--exactly-once", "--persistent", "--probing-rebalance-interval-ms", "1000")
    instances = {}
    with pylog.connect(module_server.bootstrap) as client:
        client.create_topic(topic, TOPIC_PARTITIONS)

        def start(name):
            instances[name] = Instance(module_server.bootstrap, app_id, topic, tmp_path / name, 3000, *extra)

        try:
            for name in "abc":
                start(name)
            wait_until(lambda: settled(list(instances.values()), 3), timeout=120, what="three instances settled")
            for _ in range(6):
                batch = [rnd.choice(keys) for _ in range(200)]
                produce(client, topic, batch)
                for k in batch:
                    expected[k] += 1
                victim = rnd.choice(sorted(instances))
                instances.pop(victim).kill()
                start(victim)
                wait_until(lambda: settled(list(instances.values()), 3), timeout=120,
                           what=f"three instances settled after {victim} was killed")
            live = list(instances.values())
            wait_until(lambda: all_answer(live, {k: n for k, n in expected.items() if n}), timeout=120,
                       what="every word counted once")
            assert all(answer(live, k) is None or expected[k] for k in keys)
            for inst in live:
                inst.stop()
        finally:
            for inst in instances.values():
                inst.kill()
