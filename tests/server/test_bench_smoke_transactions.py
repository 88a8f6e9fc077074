"""Smoke run of benches/bench_transactions.py: both producers and the ratio run once on
a few thousand records against a real ``pylog serve``, so the asv suite does not rot."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

pytest.importorskip("confluent_kafka")
from benches import bench_transactions  # noqa: E402

pytestmark = pytest.mark.bench


def test_transactional_and_idempotent_rates_and_their_ratio(monkeypatch):
    monkeypatch.setattr(bench_transactions, "RECORDS", 5000)
    b = bench_transactions.TxnRatio()
    b.ROUNDS = 1
    b.setup()
    try:
        ratio = b.track_transactional_vs_idempotent()
        assert ratio > 0
        assert bench_transactions.Produce.track_transactional_records_per_s(b) > 0
    finally:
        b.teardown()
