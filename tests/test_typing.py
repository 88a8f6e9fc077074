"""The public API's types, checked by mypy as a user's code would be.

pylog ships ``py.typed`` (PEP 561), so mypy reads pylog's own annotations (and the
``.pyi`` stubs of the Cython modules) in code that imports it.  A correct snippet of the
embedded API (``pylog.open``, producer, consumer, errors) must pass ``mypy --strict``;
a wrong one must be rejected with the errors named here, which shows the check looks
at real types (an ``Any`` anywhere on the path would let the wrong snippet through).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
    import pylog
    from pylog import Consumer, ConsumerRecord, Producer, PylogError, RecordMetadata

    def run(path: str) -> list[bytes]:
        out: list[bytes] = []
        with pylog.open(path, num_partitions=1) as broker:
            broker.create_topic("orders", partitions=3)
            producer: Producer = broker.producer(acks="all", linger_ms=5)
            md: RecordMetadata = producer.send("orders", value=b"v", key=b"k").result()
            last: int = md.offset + 1
            consumer: Consumer = broker.consumer("orders", group_id="g", auto_offset_reset="earliest")
            for record in consumer.poll(timeout_ms=100):
                r: ConsumerRecord = record
                if r.value is not None and r.offset < last:
                    out.append(bytes(r.value))
            consumer.close()
            producer.close()
        return out

    def code_of(exc: PylogError) -> int:
        return exc.error_code
"""

#: (line of BAD, mypy error code) that mypy must report.
BAD = """
    import pylog

    with pylog.open(42) as broker:
        broker.create_topic("orders", partitions="3")
        p = broker.producer()
        md = p.send("orders", value=b"v").result()
        md.offset + "1"
        c = broker.consumer("orders")
        for r in c.poll(timeout_ms="soon"):
            r.no_such_field
"""
BAD_ERRORS = {(3, "arg-type"), (4, "arg-type"), (7, "operator"), (9, "arg-type"), (10, "attr-defined")}


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory) -> Path:
    """A mypy cache for this module's runs alone: the second run reads pylog's and the
    standard library's analysis from it instead of redoing it (~2.5 s of ~3); a fresh
    directory per session, so nothing from another tree or run is ever read."""
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(tmp_path: Path, source: str, cache: Path) -> tuple[int, str]:
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
         "--show-error-codes", "--no-color-output", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_public_api_passes_mypy_strict(tmp_path, mypy_cache):
    code, out = _mypy(tmp_path, GOOD, mypy_cache)
    assert code == 0, out
    assert "Success" in out


def test_wrong_use_of_the_public_api_is_rejected(tmp_path, mypy_cache):
    code, out = _mypy(tmp_path, BAD, mypy_cache)
    assert code == 1, out
    found = {(int(m.group(1)), m.group(2))
             for m in re.finditer(r"snippet\.py:(\d+): error: .*\[([\w-]+)\]$", out, re.M)}
    assert BAD_ERRORS <= found, out
    # Had pylog no py.typed marker, mypy would skip it and see only an import error.
    assert "import-untyped" not in out and "missing library stubs" not in out, out


def test_py_typed_is_package_data():
    """The marker exists and the build ships it (pyproject's package-data names it; a
    wheel built from this tree lists pylog/py.typed)."""
    assert (ROOT / "src" / "pylog" / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_data = re.search(r"^\[tool\.setuptools\.package-data\]\n(.*?)^\[", pyproject, re.M | re.S)
    assert package_data is not None and re.search(r'^pylog = \[.*"py\.typed"', package_data.group(1), re.M)
