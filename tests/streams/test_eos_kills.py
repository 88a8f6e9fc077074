"""A stateful streams app under ``processing.guarantee=exactly_once_v2`` against ``pylog
serve``, SIGKILLed at random moments and restarted, until its input is consumed; then
every output read with read_committed is exactly what one clean run makes.

The app (tests/streams/eos_streams_app.py) copies its input upper-cased and counts the
input values through a repartition topic and a logged store, emitting ``word=n`` on
every update (no cache), so an input record processed twice shows as a repeated count
and one lost as a missing count: for each word the counts read back must be 1, 2, ...,
n exactly, and the copy each input partition in order.  The kill harness (lock-step
line protocol, kill moments, restarts) is tests/server/test_exactly_once_kills.py's
:class:`Loop` and :class:`Processor`, pointed at the streams app.  Seeds are in the
test ids; ``-s`` shows the tally (records, kills by moment, run time).
"""

from __future__ import annotations

import collections
import os
import random
import time

import pytest

import pylog
from server.conftest import serve  # noqa: F401  (the `pylog serve` factory fixture)
from server.test_exactly_once_kills import TXN_OVERRIDES, Loop, Processor
from server.util import unique
from tests.client.helpers import read_to_end

APP = os.path.join(os.path.dirname(__file__), "eos_streams_app.py")
PARTITIONS = 3
WORDS = 7


class StreamsLoop(Loop):
    """The input topic, the two output topics and the app's settings; starts
    eos_streams_app.py where :class:`Loop` starts the plain processor."""

    guarantee = "exactly_once_v2"

    def __init__(self, bootstrap: str, tmp_path, records: int, max_records: int = 30) -> None:
        self.bootstrap = bootstrap
        self.input, self.copy, self.counts = unique("seos-in"), unique("seos-copy"), unique("seos-counts")
        self.state_dir = str(tmp_path / "state")
        self.max_records = max_records
        self.stderr_path = str(tmp_path / f"{self.input}.app.log")
        rng = random.Random(records)
        self.expected_copy: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        self.words: collections.Counter = collections.Counter()
        with pylog.connect(bootstrap) as c:
            for t in (self.input, self.copy, self.counts):
                c.create_topic(t, PARTITIONS)
            with c.producer(linger_ms=5) as p:
                for i in range(records):
                    word = f"w{rng.randrange(WORDS)}"
                    p.send(self.input, word.encode(), key=b"k%d" % i)
                    self.words[word] += 1
                p.flush()
            # The copy's sink partitions by key as the input's producer did.
            for part, values in read_to_end(c, self.input, PARTITIONS, "read_uncommitted").items():
                self.expected_copy[part] = [v.upper() for v in values]

    def start(self, lockstep: bool = False) -> Processor:
        # A commit after every poll (commit.interval.ms 0): many small transactions to
        # land kills in.
        return Processor(["--bootstrap", self.bootstrap, "--input", self.input, "--copy", self.copy,
                          "--counts", self.counts, "--state-dir", self.state_dir,
                          "--max-records", str(self.max_records), "--commit-interval-ms", "0",
                          "--guarantee", self.guarantee],
                         self.stderr_path, lockstep, script=APP)

    def check_output(self, what: str) -> dict[str, int]:
        with pylog.connect(self.bootstrap) as c:
            copy = read_to_end(c, self.copy, PARTITIONS, "read_committed")
            counts = read_to_end(c, self.counts, PARTITIONS, "read_committed")
        by_word: dict[str, list[int]] = collections.defaultdict(list)
        for p in range(PARTITIONS):
            for v in counts[p]:
                word, n = v.decode().split("=")
                by_word[word].append(int(n))
        got_copy = collections.Counter(v for vs in copy.values() for v in vs)
        want_copy = collections.Counter(v for vs in self.expected_copy.values() for v in vs)
        updates = sum(len(ns) for ns in by_word.values())
        tally = {"records": sum(self.words.values()), "copy lost": sum((want_copy - got_copy).values()),
                 "copy duplicated": sum((got_copy - want_copy).values()), "count updates": updates,
                 "counts exact": all(by_word[w] == list(range(1, n + 1)) for w, n in self.words.items())
                 and set(by_word) == set(self.words)}
        print(f"\n{what}: {tally}")
        assert tally["copy lost"] == 0 and tally["copy duplicated"] == 0, f"{what}: {tally}"
        assert copy == self.expected_copy, f"{what}: the copy is out of order"
        for w, n in sorted(self.words.items()):
            assert by_word[w] == list(range(1, n + 1)), f"{what}: counts of {w}: {by_word[w]} (want 1..{n})"
        assert set(by_word) == set(self.words), f"{what}: {tally}"
        return tally


def run_kills(serve, tmp_path, *, seed: int, records: int, kills: int,  # noqa: F811
              loop_class: type = StreamsLoop) -> None:
    sp = serve(TXN_OVERRIDES)
    loop = loop_class(sp.bootstrap, tmp_path, records)
    start = time.monotonic()
    kinds = loop.kill_randomly(random.Random(seed), kills)
    loop.finish()
    loop.check_output(f"{loop.guarantee} streams app, seed {seed}, {records} records, {kills} kills "
                      f"{dict(kinds)}, {time.monotonic() - start:.1f} s")


@pytest.mark.parametrize("seed", [7182])
def test_streams_exactly_once_with_the_app_killed_8_times(serve, tmp_path, seed):  # noqa: F811
    run_kills(serve, tmp_path, seed=seed, records=1500, kills=8)


@pytest.mark.long
@pytest.mark.parametrize("seed", [81828, 45904])
def test_streams_exactly_once_with_the_app_killed_40_times(serve, tmp_path, seed):  # noqa: F811
    run_kills(serve, tmp_path, seed=seed, records=10_000, kills=40)
