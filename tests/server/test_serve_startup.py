"""What ``pylog serve`` does before it listens (#17: at most 100 ms to listen).

Run in a fresh interpreter, as ``python -m pylog.cli serve`` runs: the cyclic GC is
paused while the server starts and resumed once it listens, with what start-up built
frozen (so later collections do not walk it); and the modules only a later request
needs (and the protocol declarations of APIs not yet called) are not imported before the
server listens.  Their first use is covered where
each is tested: a first FetchSession (tests/server/test_fetch_sessions.py), a
``--to-datetime`` reset (tests/server/test_tools.py), an unknown config's suggestion and a
Kafka broker config pylog ignores (tests/server/test_server_properties.py), a
read-only broker config in an AlterConfigs (tests/server/test_broker_configs.py),
per-IP overrides (tests/server/test_connection_caps.py), the loop thread's scheduler
slice, set with ctypes just after the server listens (tests/server/test_loop_slice.py),
the first uuid field (tests/protocol), a topic id answered (tests/server/test_versions.py),
and the client side's assignors
and partitioners, reached through ``pylog.broker`` as well (tests/broker/test_assignors.py,
tests/broker/test_partitioner.py, tests/broker/test_value_classes.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

#: Imported on first use, not before ``pylog serve`` listens.
NOT_BEFORE_LISTENING = ("datetime", "difflib", "ipaddress", "random", "lz4.frame",
                        "pylog.server.kafka_config_names", "pylog.broker.assignors",
                        "pylog.broker.partitioner", "ctypes", "uuid", "platform")

_SCRIPT = r"""
import asyncio, gc, json, logging, os, signal, sys

from pylog.cli import main

seen = {}


def after_start():
    # Runs on the loop once server.start() has returned, so after the server's ready
    # hook (which ends the start-up's GC pause).
    seen["after"] = {"gc": gc.isenabled(), "frozen": gc.get_freeze_count()}
    os.kill(os.getpid(), signal.SIGTERM)


class AtListening(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("listening on"):
            seen["listening"] = {"gc": gc.isenabled(), "modules": sorted(sys.modules)}
            asyncio.get_running_loop().call_soon(after_start)


logging.getLogger("pylog.server").addHandler(AtListening())
status = main(["serve", "--data-dir", sys.argv[1], "--listen", "127.0.0.1:0", "--log-level", "INFO"])
seen["exit"] = {"status": status, "gc": gc.isenabled()}
print(json.dumps(seen))
"""


def _serve_once(data_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, data_dir], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gc_is_paused_until_listening_then_resumed_with_start_up_frozen(tmp_path):
    seen = _serve_once(str(tmp_path / "data"))
    assert seen["listening"]["gc"] is False
    assert seen["after"]["gc"] is True and seen["after"]["frozen"] > 0
    assert seen["exit"] == {"status": 0, "gc": True}


def _interpreter_modules() -> set[str]:
    """What this interpreter imports before running any code: site's ``.pth`` files may
    import modules of the list (a CA bundle hook imports ``random`` and ``ipaddress``);
    pylog cannot avoid those, so they are not held against it."""
    out = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


def test_modules_of_later_requests_are_not_imported_before_listening(tmp_path):
    modules = set(_serve_once(str(tmp_path / "data"))["listening"]["modules"])
    assert "pylog.broker.core" in modules          # the script saw a real start
    watched = set(NOT_BEFORE_LISTENING) - _interpreter_modules()
    assert modules.isdisjoint(watched), sorted(modules & watched)
    # No API's declarations: they load on first use (tests/protocol/test_protocol_lazy_schemas.py)
    # or as the codec plans are built just after the server listens.
    assert not [m for m in modules if m.startswith("pylog.protocol.schemas.")]


def test_a_server_that_cannot_start_resumes_the_gc(tmp_path):
    # log.dirs is a file: serve refuses before it opens anything.
    bad = tmp_path / "file"
    bad.write_text("x")
    script = ("import gc, sys\nfrom pylog.cli import main\n"
              "status = main(['serve', '--data-dir', sys.argv[1], '--listen', '127.0.0.1:0'])\n"
              "print(status, gc.isenabled(), gc.get_freeze_count())\n")
    out = subprocess.run([sys.executable, "-c", script, str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "True", "0"]
    assert "is not a directory" in out.stderr

