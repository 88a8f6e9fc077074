"""A Kafka Streams (Java) application against `pylog serve` and against Apache Kafka.

The application (src/main/java/pylog/kafkaref/StreamsApp.java) counts words and sums clicks
per region over 10-second windows after a stream-table join, with repartition topics,
changelog topics and a consumer group of Kafka Streams' own assignor.  It runs once on each
server, in the same test, on the same deterministic input (fixed record timestamps), and
prints what it wrote; both runs must have written the same thing, and that thing must be
what the input implies (computed here, independently of both brokers).

Outputs are compared as Kafka Streams' guarantees allow: a KTable's updates reach its
output topic as the record cache and the commit interval flush them, so the number of
intermediate updates may differ between runs; the final value of each key may not.  The
join's output is a stream: compared as a multiset.  The group's committed offsets, the
internal topics' partition counts and cleanup policies must be the same too.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.util import unique

#: The first test of a session may run Maven's first download of Kafka's jars (~150 MB).
pytestmark = pytest.mark.timeout(900)

APP = "pylog.kafkaref.StreamsApp"
BASE_TS = 1_700_000_000_000
WINDOW_MS = 10_000
REGIONS = ("north", "south", "east", "west")
VOCABULARY = ("kafka", "pylog", "stream", "table", "window", "join", "log", "offset", "batch", "segment")


def make_input(seed: int = 16) -> dict:
    """Topics (name -> partitions) and records [topic, key, value, timestamp]; the users'
    rows come first (Kafka Streams joins a click with the row its table holds)."""
    rnd = random.Random(seed)
    users = {f"user{i}": REGIONS[i % len(REGIONS)] for i in range(8)}
    records = [["users", u, r, BASE_TS - 1000] for u, r in users.items()]
    for i in range(60):
        line = " ".join(rnd.choice(VOCABULARY) for _ in range(rnd.randint(1, 8)))
        records.append(["words", f"line{i}", line.title() + ".", BASE_TS + 100 * i])
    for i in range(200):
        records.append(["clicks", rnd.choice(sorted(users)), str(rnd.randint(1, 100)), BASE_TS + 250 * i])
    # clicks and users are joined, so co-partitioned: the same partition count.
    return {"topics": {"users": 3, "clicks": 3, "words": 2}, "records": records}


def expected(inp: dict) -> dict:
    users = {k: v for t, k, v, _ in inp["records"] if t == "users"}
    words: Counter = Counter()
    enriched: Counter = Counter()
    sums: Counter = Counter()
    for topic, key, value, ts in inp["records"]:
        if topic == "words":
            words.update(w for w in "".join(c if c.isalnum() else " " for c in value.lower()).split())
        elif topic == "clicks":
            enriched[(key, f"{users[key]}:{value}")] += 1
            sums[f"{users[key]}@{ts - ts % WINDOW_MS}"] += int(value)
    return {"word-counts": dict(words), "enriched": enriched, "region-sums": dict(sums)}


def run_app(jvm, bootstrap: str, app_id: str, input_path, state_dir) -> tuple[list[dict], float]:
    t0 = time.monotonic()
    proc = jvm.run(APP, bootstrap, app_id, str(input_path), str(state_dir), timeout=300)
    took = time.monotonic() - t0
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines or lines[-1] != {"check": "done"}:
        pytest.fail(f"the Kafka Streams app against {bootstrap} exited with {proc.returncode}:\n"
                    f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}")
    return lines, took


def outputs(lines: list[dict]) -> dict:
    """Final value per key of the two KTable outputs; the join's output as a multiset."""
    finals: dict[str, dict] = {"word-counts": {}, "region-sums": {}}
    enriched: Counter = Counter()
    for x in lines:
        if x["check"] != "out":
            continue
        if x["topic"] == "enriched":
            enriched[(x["key"], x["value"])] += 1
        else:
            # One partition per key, read in offset order: the last value read is the final one.
            finals[x["topic"]][x["key"]] = x["value"]
    return {**finals, "enriched": enriched}


def test_streams_app_same_as_apache_kafka(kafka_jars, kafka_broker, module_server, tmp_path):
    inp = make_input()
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps(inp))
    app_id = unique("streams")
    with ThreadPoolExecutor(2) as pool:
        on_kafka = pool.submit(run_app, kafka_jars, kafka_broker.bootstrap, app_id, input_path,
                               tmp_path / "state-kafka")
        on_pylog = pool.submit(run_app, kafka_jars, module_server.bootstrap, app_id, input_path,
                               tmp_path / "state-pylog")
        (kafka, kafka_s), (pylog, pylog_s) = on_kafka.result(), on_pylog.result()
    print(f"\n[kafka_ref] Streams app: {kafka_s:.1f} s against Apache Kafka, {pylog_s:.1f} s against pylog")

    want = expected(inp)
    got_kafka, got_pylog = outputs(kafka), outputs(pylog)
    # Apache Kafka is the reference: first check the app and the oracle agree there.
    assert got_kafka == want
    for name in ("word-counts", "region-sums", "enriched"):
        assert got_pylog[name] == got_kafka[name], name

    # The group committed the same offsets: every source and repartition partition to its
    # end, and the same input made the same number of records in each.
    (committed,) = [x["offsets"] for x in kafka if x["check"] == "committed"]
    assert [x["offsets"] for x in pylog if x["check"] == "committed"] == [committed]
    assert sum(v for k, v in committed.items() if k.startswith("clicks/")) == 200, committed
    assert sum(v for k, v in committed.items() if k.startswith("by-region-repartition/")) == 200, committed
    assert sum(v for k, v in committed.items() if k.startswith("by-word-repartition/")) == \
        sum(want["word-counts"].values()), committed

    # The same internal topics, with the same partition counts and cleanup policies.
    internal_kafka = [x for x in kafka if x["check"] == "internal_topic"]
    internal_pylog = [x for x in pylog if x["check"] == "internal_topic"]
    assert internal_pylog == internal_kafka
    policies = {x["name"]: x["cleanup.policy"] for x in internal_kafka}
    assert policies == {
        "by-word-repartition": "delete",
        "by-region-repartition": "delete",
        "word-count-store-changelog": "compact",
        "users-store-changelog": "compact",
        "region-sum-store-changelog": "compact,delete",
    }, policies
