"""Smoke run of benches/bench_partition_floor.py on small inputs: the C floor loop
compiles and writes what it says (every case, ratios between them), and the replay and
the confluent-kafka spread run against a real ``pylog serve`` (Apache Kafka's side is the
same code with ``KafkaServer``; its jars are the reference tests' business)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_partition_floor as floor  # noqa: E402

pytestmark = pytest.mark.bench


def test_storage_floor_measures_every_case():
    fig = floor.storage_floor(megabytes=1.0, rounds=1)
    for name, *_ in floor.STORAGE_CASES:
        assert fig[name]["cpu_ms_per_mb"] > 0
    ratios = fig["ratios"]
    assert ratios["replay_wide_to_one"] == (fig["pwritev_1000_files_wide_size"]["cpu_ms_per_mb"]
                                            / fig["pwritev_1_file_one_size"]["cpu_ms_per_mb"])


def test_storage_append_writes_every_byte(tmp_path, monkeypatch):
    # The mapped case writes through the mapping: the files hold the bytes after.
    monkeypatch.setattr(floor.tempfile, "TemporaryDirectory", lambda prefix: _Keep(tmp_path))
    floor.storage_append("mmap", 3, 1000, megabytes=0.006)
    floor.storage_append("pwritev", 2, 1000, megabytes=0.004)
    sizes = sorted(p.stat().st_size for p in tmp_path.iterdir())
    assert sizes == [2000, 2000, 2000]


class _Keep:
    def __init__(self, path):
        self.path = str(path)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        return False


def test_replay_and_spread_against_pylog():
    fig = floor.kafka_replay(megabytes=0.5, records=2000, rounds=1, servers=("pylog",), wide=4)
    pylog = fig["pylog"]
    for key in ("replay_1", "replay_wide", "spread_1", "spread_wide"):
        assert pylog[key] > 0
    assert pylog["replay_ratio"] == pylog["replay_wide"] / pylog["replay_1"]
