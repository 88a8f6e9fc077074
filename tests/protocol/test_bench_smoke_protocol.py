"""Smoke run of benches/bench_protocol.py: every benchmark method runs once (so the asv
suite does not rot), and each case's setup checks that pylog and kafka-python produce the
same bytes for the message being timed."""

import inspect
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_protocol  # noqa: E402

pytestmark = pytest.mark.bench

CASES = [obj for _, obj in inspect.getmembers(bench_protocol, inspect.isclass)
         if obj.__module__ == bench_protocol.__name__ and hasattr(obj, "setup")
         and not obj.__name__.startswith("_")]


def test_every_case_is_listed():
    assert {c.__name__ for c in CASES} == {
        "ProduceRequestV9", "ProduceRequestV3", "FetchRequestV12", "FetchRequestV4",
        "FetchResponseV12", "FetchResponseV4", "MetadataResponseV12", "MetadataResponseV8"}


@pytest.mark.parametrize("cls", CASES, ids=[c.__name__ for c in CASES])
def test_bench_runs(cls):
    bench = cls()
    bench.setup()  # raises if pylog and kafka-python disagree on the bytes
    methods = [fn for name, fn in inspect.getmembers(bench, inspect.ismethod)
               if name.startswith("time_")]
    assert len(methods) >= 5
    for fn in methods:
        fn()
    decoded = bench._decode()
    assert decoded == bench.pylog_obj
