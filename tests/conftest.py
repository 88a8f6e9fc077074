import os
import random

import pytest
from hypothesis import HealthCheck, settings

# Derandomized in CI so a red run is reproducible; locally hypothesis explores freely and
# prints the seed of any failure.
settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config):
    """Byte-compile pylog once, before any test starts a Python process.

    The suite starts hundreds of Python processes (``pylog serve``, the CLI, processors,
    streams instances), each importing pylog.  Where PYTHONDONTWRITEBYTECODE is set (as
    on the project's machines) Python never writes the ``__pycache__`` files it reads, so
    every one of those processes compiled every pylog module it imported from source:
    ~0.15 s of a ~0.25 s ``pylog serve`` start.  compileall writes them whatever that
    variable says; modules already up to date are left alone.  Same bytecode, same
    imports: only the compiling is done once instead of in every process."""
    import compileall
    from importlib.util import find_spec

    spec = find_spec("pylog")
    for path in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(path, quiet=2)


@pytest.fixture
def rng(request):
    """A seeded random.Random; the seed is printed when the test fails."""
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(2**32)))
    r = random.Random(seed)
    yield r
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n[seed] PYLOG_SEED={seed}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
