"""The stateful streams app of tests/streams/test_eos_kills.py under at-least-once (the
default guarantee) against ``pylog serve``, SIGKILLed at random moments and restarted
until its input is consumed.

At-least-once allows repeats, never losses: every input record is in the copy (as a
multiset: at least as often as in the input) and nothing else is; each word's last
count is at least the number of times it is in the input; no count is of a word the
input does not have.  Kill moments are :class:`Loop`'s, with the app's at-least-once
lines (tests/streams/eos_streams_app.py): after the producer flushed (``produced``),
just before the offsets commit (``offsets``), after it (``committed``), at a random
delay, in start-up.  Seeds are in the test ids; ``-s`` shows the tally.
"""

from __future__ import annotations

import collections

import pytest

import pylog
from server.conftest import serve  # noqa: F401  (the `pylog serve` factory fixture)
from tests.client.helpers import read_to_end

from .test_eos_kills import PARTITIONS, StreamsLoop, run_kills


class AtLeastOnceLoop(StreamsLoop):
    guarantee = "at_least_once"

    def check_output(self, what: str) -> dict[str, int]:
        with pylog.connect(self.bootstrap) as c:
            copy = read_to_end(c, self.copy, PARTITIONS, "read_uncommitted")
            counts = read_to_end(c, self.counts, PARTITIONS, "read_uncommitted")
        last: dict[str, int] = {}
        for p in range(PARTITIONS):
            for v in counts[p]:      # a word's counts are all in its partition, in order
                word, n = v.decode().split("=")
                last[word] = int(n)
        got_copy = collections.Counter(v for vs in copy.values() for v in vs)
        want_copy = collections.Counter(v for vs in self.expected_copy.values() for v in vs)
        tally = {"records": sum(self.words.values()), "copy lost": sum((want_copy - got_copy).values()),
                 "copy repeated": sum((got_copy - want_copy).values()),
                 "counted twice": sum(last.get(w, 0) - n for w, n in self.words.items())}
        print(f"\n{what}: {tally}")
        assert tally["copy lost"] == 0, f"{what}: {tally}"
        assert set(got_copy) <= set(want_copy), f"{what}: the copy has records the input does not"
        assert set(last) == set(self.words), f"{what}: counted words {sorted(last)}, input {sorted(self.words)}"
        for w, n in sorted(self.words.items()):
            assert last[w] >= n, f"{what}: {w} counted {last[w]} times, in the input {n} times"
        return tally


@pytest.mark.parametrize("seed", [3141])
def test_streams_at_least_once_with_the_app_killed_4_times(serve, tmp_path, seed):  # noqa: F811
    run_kills(serve, tmp_path, seed=seed, records=600, kills=4, loop_class=AtLeastOnceLoop)


@pytest.mark.long
@pytest.mark.parametrize("seed", [27182, 16180])
def test_streams_at_least_once_with_the_app_killed_30_times(serve, tmp_path, seed):  # noqa: F811
    run_kills(serve, tmp_path, seed=seed, records=8000, kills=30, loop_class=AtLeastOnceLoop)
