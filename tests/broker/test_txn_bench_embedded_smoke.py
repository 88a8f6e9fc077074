"""Smoke run of benches/bench_transactions.py's embedded benchmarks: pylog's own
idempotent and transactional producers over ``pylog.open(dir)``, once each on a few
thousand records, so the asv suite does not rot."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_transactions  # noqa: E402

pytestmark = pytest.mark.bench


def test_embedded_transactional_and_idempotent_rates_and_their_ratio(monkeypatch):
    monkeypatch.setattr(bench_transactions._EmbeddedBench, "RECORDS", 5000)
    b = bench_transactions.EmbeddedTxnRatio()
    b.ROUNDS = 1
    b.setup()
    try:
        assert b.track_transactional_vs_idempotent() > 0
        assert bench_transactions.EmbeddedProduce.track_transactional_records_per_s(b) > 0
        assert b.txn.transaction_state == "READY"      # every transaction it began ended
    finally:
        b.teardown()
