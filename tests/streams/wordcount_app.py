"""A pylog.streams app that runs on any cluster through ``pylog.connect`` (Apache Kafka in
tests/kafka_ref/test_pylog_streams_on_kafka.py, a 3-broker pylog cluster in
tests/streams/test_streams_on_cluster.py), and the check of what it wrote.

Lines (fixed timestamps) are split into words, re-keyed by word through a repartition
topic and counted twice: in total (a key-value store) and per 10-second tumbling window
(a window store, a grace of a minute), each count written as ``word=n`` /
``word@window-start=n`` on every update.  The last value of each key must be the count the input implies, computed here;
the internal topics must be the four Kafka Streams names, with its configs.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Dict, List, Tuple

from pylog.streams import Materialized, Serdes, StreamsBuilder, TimeWindows
from tests.client.helpers import read_to_end

BASE_TS = 1_700_000_000_000
WINDOW_MS = 10_000
#: Longer than the input's time span: the repartition topic mixes the lines' partitions,
#: so words arrive out of order, and none may be late (the counts would depend on timing).
GRACE_MS = 60_000
VOCABULARY = ("kafka", "pylog", "stream", "table", "window", "join", "log", "offset")
PARTITIONS = 3


def make_lines(seed: int, n: int = 120) -> List[Tuple[str, str, int]]:
    """(key, line, timestamp) of ``n`` lines over a few windows."""
    rnd = random.Random(seed)
    return [(f"line{i}", " ".join(rnd.choice(VOCABULARY) for _ in range(rnd.randint(1, 6))), BASE_TS + 250 * i)
            for i in range(n)]


def expected(lines: List[Tuple[str, str, int]]) -> Tuple[Dict[str, int], Dict[str, int]]:
    counts: Counter = Counter()
    windowed: Counter = Counter()
    for _key, line, ts in lines:
        for word in line.split():
            counts[word] += 1
            windowed[f"{word}@{ts - ts % WINDOW_MS}"] += 1
    return dict(counts), dict(windowed)


def build(app_id: str, topics: Dict[str, str], state_dir: Any, guarantee: str, **config: Any) -> Any:
    s = Serdes.string()
    b = StreamsBuilder({"default.key.serde": s, "default.value.serde": s})
    words = b.stream(topics["lines"]).flat_map_values(str.split).group_by(lambda k, w: w)
    (words.count(materialized=Materialized("counts")).to_stream()
     .map(lambda w, n: (w, f"{w}={n}")).to(topics["counts"]))
    (words.windowed_by(TimeWindows.of_size_with_grace(WINDOW_MS, GRACE_MS)).count(materialized=Materialized("windowed"))
     .to_stream().map(lambda w, n: (w.key, f"{w.key}@{w.window.start}={n}")).to(topics["windowed"]))
    return b.build(app_id, {"processing.guarantee": guarantee, "state.dir": str(state_dir),
                            "commit.interval.ms": 100, **config})


def create_and_fill(client: Any, topics: Dict[str, str], lines: List[Tuple[str, str, int]], rf: Any = None) -> None:
    for t in topics.values():
        client.create_topic(t, PARTITIONS, rf)
    with client.producer(linger_ms=5) as p:
        for key, line, ts in lines:
            p.send(topics["lines"], line.encode(), key=key.encode(), timestamp_ms=ts)
        p.flush()


def last_values(client: Any, topic: str) -> Dict[str, int]:
    """``key=n`` records, read committed: the last n of each key (a key's records are in
    one partition, in order)."""
    out: Dict[str, int] = {}
    for values in read_to_end(client, topic, PARTITIONS, "read_committed").values():
        for v in values:
            key, n = v.decode().rsplit("=", 1)
            out[key] = int(n)
    return out


def check(client: Any, app_id: str, topics: Dict[str, str], lines: List[Tuple[str, str, int]]) -> List[str]:
    """The app's outputs are the expected counts and its internal topics are Kafka
    Streams' four; returns their names."""
    counts, windowed = expected(lines)
    assert last_values(client, topics["counts"]) == counts
    assert last_values(client, topics["windowed"]) == windowed
    internal = sorted(t for t in client.list_topics() if t.startswith(app_id + "-"))
    assert internal == sorted(f"{app_id}-{name}" for name in ("counts-changelog", "counts-repartition",
                                                              "windowed-changelog", "windowed-repartition"))
    cfg = {e.name: e.value for e in client.describe_configs(f"{app_id}-counts-repartition")}
    assert (cfg["cleanup.policy"], cfg["retention.ms"], cfg["segment.bytes"]) == ("delete", "-1", "52428800")
    cfg = {e.name: e.value for e in client.describe_configs(f"{app_id}-windowed-changelog")}
    assert (cfg["cleanup.policy"], cfg["retention.ms"]) == ("compact,delete", str(WINDOW_MS + GRACE_MS + 86_400_000))
    return internal
