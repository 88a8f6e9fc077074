"""Each of pylog's compiled modules, and the Python modules that read them at their own
import, imports as the first pylog module of a fresh process.  ``pylog._protocol`` did
not: it imported pylog.protocol's errors at its top, which ran the pylog.protocol
package, whose codec read the half-made ``_protocol`` (a circular import)."""

import subprocess
import sys

import pytest

MODULES = ["pylog._protocol", "pylog._core", "pylog.protocol._plan", "pylog.protocol.codec",
           "pylog.protocol._errors", "pylog.records", "pylog.errors"]


@pytest.mark.parametrize("module", MODULES)
def test_imports_first_in_a_fresh_process(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
