"""Each API's declarations are imported on its first use (#17: a server does not build
those of APIs nobody called before it listens): in a fresh interpreter, importing the
protocol imports none of them; the generated table (``schemas.APIS``) says what every
module declares; a first use from several threads at once gets the one declaration;
and a first request of a not yet loaded API decodes and answers."""

import subprocess
import sys

_FRESH = r"""
import sys
import threading

import pylog.protocol
from pylog.protocol import apis, codec, messages as m
from pylog.protocol.schemas import APIS

loaded = [k for k in sys.modules if k.startswith("pylog.protocol.schemas.")]
assert loaded == [], loaded
assert apis.supported_versions() == {k: (a[3], a[4]) for k, a in sorted(APIS.items())}
assert [k for k in sys.modules if k.startswith("pylog.protocol.schemas.")] == []

# A first request of an API nobody used yet: its declaration loads on the way.
req = m.HeartbeatRequest(group_id="g", generation_id=3, member_id="m1")
frame = pylog.protocol.segments_to_bytes(codec.encode_request(12, 4, 7, "client", req))
header, body = codec.decode_request(frame[4:])          # without its size prefix
assert (header.api_key, header.api_version, header.correlation_id) == (12, 4, 7)
assert body == req
assert "pylog.protocol.schemas.heartbeat" in sys.modules
assert "pylog.protocol.schemas.fetch" not in sys.modules

# First use of every other API from 8 threads at once.
got = [None] * 8
barrier = threading.Barrier(8)

def first_use(i):
    barrier.wait()
    got[i] = {k: (apis.request_schema(k), apis.response_schema(k)) for k in APIS}

threads = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
from pylog.protocol.schemas import MODULES
want = {k: (mod.REQUEST, mod.RESPONSE) for k, mod in MODULES.items()}
for g in got:
    assert g.keys() == want.keys()
    assert all(g[k][0] is want[k][0] and g[k][1] is want[k][1] for k in want)
print("ok")
"""


def test_declarations_load_on_first_use_from_any_thread():
    out = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_generated_table_says_what_each_module_declares():
    from pylog.protocol import codec
    from pylog.protocol.schemas import APIS, MODULES

    assert APIS.keys() == MODULES.keys()
    for key, (module, request, response, low, high, flexible) in APIS.items():
        mod = MODULES[key]
        assert mod.__name__ == f"pylog.protocol.schemas.{module}" and mod.API_KEY == key
        assert (mod.REQUEST.name, mod.RESPONSE.name) == (request, response)
        assert (mod.REQUEST.min_version, mod.REQUEST.max_version) == (low, high)
        assert flexible == (None if mod.REQUEST.flexible.empty else mod.REQUEST.flexible.low)
        assert codec._FLEXIBLE_FROM.get(key) == flexible
