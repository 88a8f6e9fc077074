"""A client cannot make the broker create more partitions than the process can keep open,
and a create that fails part-way (out of descriptors, a full disk) leaves the topic as it
was: no half-created topic, no registry entry that the next open cannot honour."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import textwrap

import pytest

import pylog
from pylog.errors import InvalidPartitionsError, KafkaStorageError


def _registry_topics(data_dir):
    names = [n for n in os.listdir(data_dir) if n.endswith(".json") and "topic" in n]
    assert len(names) == 1, names
    with open(os.path.join(data_dir, names[0])) as f:
        return json.load(f)["topics"]


def _partition_dirs(data_dir, topic):
    return sorted(n for n in os.listdir(data_dir) if n.rsplit("-", 1)[0] == topic)


def test_create_beyond_the_open_file_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    d = str(tmp_path / "data")
    with pylog.Broker.open(d) as broker:
        held = sum(len(broker.describe_topic(t).partitions) for t in broker.list_topics(internal=True))
        cap = (1024 - 256) // 4
        with pytest.raises(InvalidPartitionsError, match="open-file limit"):
            broker.create_topic("big", cap - held + 1)
        with pytest.raises(InvalidPartitionsError, match="open-file limit"):
            broker.create_topic("big", cap - held + 1, validate_only=True)
        assert not broker.has_topic("big") and not _partition_dirs(d, "big")
        broker.create_topic("big", cap - held - 1)          # up to the cap is fine
        with pytest.raises(InvalidPartitionsError, match="open-file limit"):
            broker.create_partitions("big", cap - held + 1)
        assert broker.num_partitions("big") == cap - held - 1
        broker.create_partitions("big", cap - held)
        assert broker.num_partitions("big") == cap - held


@pytest.mark.parametrize("how", ["create_topic", "create_partitions"])
def test_a_create_failing_part_way_leaves_nothing_behind(tmp_path, monkeypatch, how):
    d = str(tmp_path / "data")
    broker = pylog.Broker.open(d)
    if how == "create_partitions":
        broker.create_topic("t", 2)
        broker.append("t", 0, _batch(b"kept"))
    real = broker.logs.get_or_create_log
    made = []

    def failing(topic, partition, config=None):
        if topic == "t" and len([m for m in made if m == topic]) == 3:
            raise OSError(errno.EMFILE, "Too many open files")
        made.append(topic)
        return real(topic, partition, config)

    monkeypatch.setattr(broker.logs, "get_or_create_log", failing)
    with pytest.raises(KafkaStorageError, match="Too many open files"):
        if how == "create_topic":
            broker.create_topic("t", 6)
        else:
            broker.create_partitions("t", 8)
    monkeypatch.undo()
    want = 0 if how == "create_topic" else 2
    assert (broker.num_partitions("t") if broker.has_topic("t") else 0) == want
    assert len(_partition_dirs(d, "t")) == want
    assert _registry_topics(d).get("t", {"partitions": 0})["partitions"] == want
    broker.close()
    with pylog.Broker.open(d) as broker:        # the next open agrees, and the data is there
        assert (broker.num_partitions("t") if broker.has_topic("t") else 0) == want
        if want:
            assert broker.fetch("t", 0, 0).records is not None
            broker.create_partitions("t", 3)   # and the topic still grows
            assert broker.num_partitions("t") == 3


def _batch(value):
    from pylog.records import RecordBatchBuilder

    b = RecordBatchBuilder()
    b.append(None, None, value)
    return bytes(b.build())


def test_a_real_descriptor_limit_ends_in_a_clear_refusal(tmp_path):
    """Under a real, low RLIMIT_NOFILE a huge CreatePartitions is refused up front and the
    broker goes on working (before, the process ran out of descriptors mid-create)."""
    code = textwrap.dedent(f"""
        import resource, pylog
        from pylog.errors import InvalidPartitionsError
        resource.setrlimit(resource.RLIMIT_NOFILE, (768, 768))
        with pylog.Broker.open({str(tmp_path / "data")!r}) as b:
            b.create_topic("t", 1)
            try:
                b.create_partitions("t", 100000)
            except InvalidPartitionsError as exc:
                print("refused:", exc)
            b.create_partitions("t", 20)
            print("partitions:", b.num_partitions("t"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "open-file limit (768" in out.stdout
    assert "partitions: 20" in out.stdout
