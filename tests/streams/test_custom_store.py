"""A user's own state store (Kafka's custom ``StateStore`` through a ``StoreBuilder``)
in a Processor API topology on the embedded runtime: its writes go to its changelog
topic, and a new instance of the app restores it from there (``restore_batch``) and
goes on from the restored state."""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import pylog
from pylog.streams import Processor, Serdes, StreamsApp, Topology
from pylog.streams.state import StoreBuilder

S = Serdes.string()


class DictStore:
    """A key-value store of the user's: a dict; remembers what it was restored with."""

    persistent = False
    instances: List["DictStore"] = []

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: Dict[bytes, bytes] = {}
        self.restored: List[Tuple[bytes, Optional[bytes]]] = []
        self.open = False
        DictStore.instances.append(self)

    def init(self, context) -> None:
        self.open = True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.open = False

    def is_open(self) -> bool:
        return self.open

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        for key, value in records:
            self.restored.append((bytes(key), value))
            self.put(key, value)

    def get(self, key: bytes) -> Optional[bytes]:
        return self.data.get(bytes(key))

    def put(self, key: bytes, value: Optional[bytes]) -> None:
        if value is None:
            self.data.pop(bytes(key), None)
        else:
            self.data[bytes(key)] = bytes(value)

    def all(self) -> Iterator[Tuple[bytes, bytes]]:
        return iter(sorted(self.data.items()))

    def approximate_num_entries(self) -> int:
        return len(self.data)


class RunningSum(Processor):
    """Sums the values per key in store "sums"; forwards ``key=sum``."""

    def init(self, context) -> None:
        super().init(context)
        self.store = context.get_state_store("sums")

    def process(self, record) -> None:
        key = record.key.encode()
        total = int(self.store.get(key) or b"0") + int(record.value)
        self.store.put(key, str(total).encode())
        self.context.forward(record.with_value(f"{record.key}={total}"))


def app(state_dir) -> StreamsApp:
    t = Topology()
    t.add_source("src", "numbers", key_serde=S, value_serde=S)
    t.add_processor("sum", RunningSum, "src")
    t.add_state_store(StoreBuilder("sums", "key_value", lambda: DictStore("sums")), "sum")
    t.add_sink("out", "sums", "sum", key_serde=S, value_serde=S)
    return StreamsApp(t, "custom", {"commit.interval.ms": 50, "state.dir": str(state_dir)})


def send(client, pairs) -> None:
    p = client.producer()
    for k, v in pairs:
        p.send("numbers", key=k.encode(), value=str(v).encode())
    p.flush()
    p.close()


def read(client, topic: str) -> List[Tuple[bytes, Optional[bytes]]]:
    c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([(topic, 0)])
    end = c.end_offsets([(topic, 0)])[(topic, 0)]
    out: list = []
    while c.position((topic, 0)) < end:
        out.extend((r.key, r.value) for r in c.poll(timeout_ms=200))
    c.close(autocommit=False)
    return out


def test_a_custom_store_is_logged_and_restored_after_a_restart(tmp_path):
    DictStore.instances.clear()
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("numbers", 1)
        client.create_topic("sums", 1)
        send(client, [("a", 1), ("b", 10), ("a", 2)])
        app(tmp_path / "state").run(client, until_idle=True)
        assert [v for _, v in read(client, "sums")] == [b"a=1", b"b=10", b"a=3"]
        # the store's writes, in its changelog topic (Kafka's name)
        assert read(client, "custom-sums-changelog") == [(b"a", b"1"), (b"b", b"10"), (b"a", b"3")]
        first = DictStore.instances[-1]
        assert first.restored == [] and first.data == {b"a": b"3", b"b": b"10"}

        # a new instance: a new store restored from the changelog, then more input
        send(client, [("b", 5), ("a", 4)])
        app(tmp_path / "state").run(client, until_idle=True)
        second = DictStore.instances[-1]
        assert second is not first
        assert second.restored == [(b"a", b"1"), (b"b", b"10"), (b"a", b"3")]
        assert second.data == {b"a": b"7", b"b": b"15"}
        assert [v for _, v in read(client, "sums")][3:] == [b"b=15", b"a=7"]
