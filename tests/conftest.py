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
