"""Smoke run of benches/bench_records.py and bench_crc.py: every benchmark runs once, so
the asv suite does not rot; plus the bulk and columnar paths' peers agree on the bytes."""

import inspect
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_crc, bench_records  # noqa: E402

pytestmark = pytest.mark.bench


def _run_all(cls):
    params = getattr(cls, "params", None)
    for param in (params if params else [None]):
        bench = cls()
        args = () if param is None else (param,)
        bench.setup(*args)
        for name, fn in inspect.getmembers(bench, inspect.ismethod):
            if name.startswith("time_"):
                fn(*args)


@pytest.mark.parametrize("cls", [bench_records.Encode, bench_records.Decode,
                                 bench_records.Compressed, bench_records.Batches,
                                 bench_crc.Crc32c])
def test_benchmarks_run(cls):
    _run_all(cls)


def test_encoders_agree_with_peer():
    enc = bench_records.Encode()
    enc.setup()
    ours = bench_records._pylog_encode(enc.values, enc.timestamps)
    assert ours == bytes(bench_records._aio_encode(enc.values, enc.timestamps))
    from pylog.records import RecordBatchBuilder

    b = RecordBatchBuilder()
    b.append_columns(enc.data, enc.offsets, enc.ts_array)
    assert b.build() == ours
