"""An idempotent producer over the wire while ``pylog serve`` is killed (SIGKILL) and
restarted on the same port mid-stream: every acknowledged record is in the log exactly
once, in send order per partition, and nothing is duplicated."""

from __future__ import annotations

import socket
import threading

import pylog
from tests.client.helpers import records_of
from tests.server.conftest import ServeProcess, _check_stopped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_idempotent_producer_survives_a_server_kill_and_restart(tmp_path):
    sp = ServeProcess(str(tmp_path / "data"), port=_free_port())
    sp.start()
    try:
        with pylog.connect(sp.bootstrap, reconnect_backoff_max_ms=200) as client:
            client.create_topic("t", 3)
            p = client.producer(linger_ms=1, batch_size=2048, retry_backoff_max_ms=200)
            assert p.enable_idempotence
            handles: list = []
            half = threading.Event()

            def send() -> None:
                for i in range(6000):
                    handles.append(p.send("t", b"%06d" % i, key=b"k%d" % (i % 3)))
                    if i == 2000:
                        half.set()

            sender = threading.Thread(target=send)
            sender.start()
            half.wait(60)
            # Some records are acknowledged before the kill, some are in flight during it.
            handles[0].result(timeout=60)
            sp.kill()
            sp.start()
            sender.join(120)
            assert not sender.is_alive()
            p.flush(120)
            assert client.transport.net.connection(0).connects >= 2       # it did reconnect
            acked = [h.result(timeout=0).partition for h in handles]   # raises if any failed
            assert len(acked) == 6000
            got = records_of(client, "t")
            values = [r.value for rs in got.values() for r in rs]
            assert len(values) == len(set(values)) == 6000                 # exactly once
            for part, recs in got.items():
                seq = [int(r.value) for r in recs]
                assert seq == sorted(seq), f"partition {part} out of order"
                assert [r.offset for r in recs] == list(range(len(recs)))
            p.close()
    finally:
        _check_stopped(sp)
