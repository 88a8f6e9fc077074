"""How benches/bench_vs_kafka.py judges a goal: by the median of the rounds' own ratios
(each round's pylog and Kafka ran back to back under the same load), with the rounds
that met it and a two-sided sign test of them; figures measured outside the rounds by
the ratio of the two medians."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_vs_kafka as bvk  # noqa: E402


@pytest.mark.parametrize("k, n, p", [
    (9, 15, 9949 / 16384),          # 2 * P(X <= 6), X ~ Binomial(15, 1/2)
    (13, 15, 0.00738525390625),
    (2, 15, 0.00738525390625),      # symmetric
    (5, 5, 0.0625),                 # five rounds can never reach p < 0.05
    (0, 1, 1.0),
    (1, 2, 1.0),
])
def test_sign_test(k, n, p):
    assert bvk.sign_test(k, n) == pytest.approx(p)


def _result(pylog: dict, kafka: dict, rounds: int) -> dict:
    """compare()'s result for the given per-round samples (one list per figure)."""
    import statistics

    result: dict = {"rounds": rounds, "load_average": (0.5, 0.5), "turns": True,
                    "pylog": {k: statistics.median(v) for k, v in pylog.items()},
                    "kafka": {k: statistics.median(v) for k, v in kafka.items()}}
    result["ratio"] = {k: result["pylog"][k] / result["kafka"][k] for k in result["pylog"]}
    result.update(bvk.paired({"pylog": pylog, "kafka": kafka}, rounds))
    return result


def test_a_drifting_machine_is_judged_round_by_round():
    # The machine slows down half-way for both servers alike; pylog is 10% ahead in every
    # round.  The medians of each side set pylog's slow rounds against Kafka's fast ones.
    pylog = {"produce_100": [1.1, 1.1, 1.1, 0.55, 0.55, 0.55, 0.55]}
    kafka = {"produce_100": [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]}
    res = _result(pylog, kafka, 7)
    assert res["ratio"]["produce_100"] == pytest.approx(0.55)
    said = bvk.verdict(res, "produce_100")
    assert said.startswith("goal >= 1: met, rounds' median 1.10x, met in 6 of 7")
    assert "sign test p=0.12: a tie within the rounds' noise" in said


def test_clear_wins_misses_and_ties_are_named():
    won = _result({"consume_100": [1.2] * 13 + [0.9] * 2}, {"consume_100": [1.0] * 15}, 15)
    assert bvk.verdict(won, "consume_100").endswith("met in 13 of 15 (sign test p=0.0074: met beyond the rounds' noise)")
    lost = _result({"consume_100": [0.8] * 13 + [1.1] * 2}, {"consume_100": [1.0] * 15}, 15)
    said = bvk.verdict(lost, "consume_100")
    assert said.startswith("goal >= 1: NOT met, rounds' median 0.80x")
    assert said.endswith("(sign test p=0.0074: missed beyond the rounds' noise)")
    tie = _result({"latency_p99": [0.9] * 9 + [1.1] * 6}, {"latency_p99": [1.0] * 15}, 15)
    assert "goal <= 1: met, rounds' median 0.90x, met in 9 of 15 (sign test p=0.61: a tie" in \
        bvk.verdict(tie, "latency_p99")


def test_figures_outside_the_rounds_use_the_ratio_of_medians():
    res = _result({"rss_mb": [50.0]}, {"rss_mb": [500.0]}, 15)
    assert bvk.verdict(res, "rss_mb") == "goal <= 0.25: met"
    assert bvk.verdict(res, "restart_s") is None          # no goal


def test_the_table_carries_each_verdict():
    keys = [k for k, *_ in bvk.FIGURES if k not in bvk.NOT_PER_ROUND]
    res = _result({k: [1.0, 2.0, 3.0] for k in keys}, {k: [1.0, 1.0, 1.0] for k in keys}, 3)
    text = bvk.table(res)
    line = next(ln for ln in text.splitlines() if ln.startswith("consume 1 KB"))
    assert "goal >= 1: met, rounds' median 2.00x, met in 3 of 3 (sign test p=0.25: a tie" in line


def test_asv_tracks_both_ratios_of_each_goal():
    res = _result({"consume_100": [1.2, 0.6, 1.2]}, {"consume_100": [1.0, 1.0, 0.5]}, 3)
    bench = bvk.VsKafka()
    assert bench.track_consume_100_ratio(res) == pytest.approx(1.2)
    assert bench.track_consume_100_rounds_median_ratio(res) == pytest.approx(1.2)
    res = _result({"consume_100": [1.0, 0.6, 0.6]}, {"consume_100": [1.0, 1.0, 0.5]}, 3)
    assert bench.track_consume_100_ratio(res) == pytest.approx(0.6)
    assert bench.track_consume_100_rounds_median_ratio(res) == pytest.approx(1.0)
    assert not hasattr(bench, "track_rss_mb_rounds_median_ratio")


def test_each_server_is_set_against_its_rounds_ceiling():
    # The machine halves its speed after the first round for every run alike: per-round
    # ratios to the ceiling stay 0.9 (pylog) and 0.8 (Kafka).
    samples = {"pylog": {"consume_100": [0.9, 0.45, 0.45]}, "kafka": {"consume_100": [0.8, 0.4, 0.4]},
               "ceiling": {"consume_100": [1.0, 0.5, 0.5]}}
    got = bvk.against_ceiling(samples)
    assert got["ceiling"] == {"consume_100": 0.5}
    assert got["vs_ceiling"]["pylog"]["consume_100"] == pytest.approx(0.9)
    assert got["vs_ceiling"]["kafka"]["consume_100"] == pytest.approx(0.8)
    assert bvk.against_ceiling({"pylog": {}, "kafka": {}}) == {"ceiling": {}, "vs_ceiling": {"pylog": {}, "kafka": {}}}


def test_the_table_and_asv_carry_the_ceiling():
    keys = [k for k, *_ in bvk.FIGURES if k not in bvk.NOT_PER_ROUND]
    pylog, kafka = {k: [1.0, 1.0, 1.0] for k in keys}, {k: [0.5, 0.5, 0.5] for k in keys}
    res = _result(pylog, kafka, 3)
    res.update(bvk.against_ceiling({"pylog": pylog, "kafka": kafka,
                                    "ceiling": {k: [2.0, 2.0, 2.0] for k in bvk.CEILING_FIGURES}}))
    text = bvk.table(res)
    section = text.split("(benches.ceiling_server)", 1)[1]
    line = next(ln for ln in section.splitlines() if ln.startswith("fetch 1 KB"))
    assert line.split()[-2:] == ["0.50x", "0.25x"]
    assert bvk.VsKafka().track_fetch_1000_vs_ceiling_ratio(res) == pytest.approx(0.5)
    assert not hasattr(bvk.VsKafka, "track_rss_mb_vs_ceiling_ratio")
