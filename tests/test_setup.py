"""The test set-up is reproducible: every package the README's test command installs is
pinned in ci/constraints.txt, and the suite runs on exactly those versions.

A new release of a test dependency once broke a fresh machine's run while an older,
hand-installed one kept CI green (kafka-python 3 and snappy); these checks make such a
drift fail loudly and by name instead.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _name(requirement: str) -> str:
    """The canonical project name of a PEP 508 requirement string."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert m, requirement
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    with open(os.path.join(ROOT, "ci", "constraints.txt"), encoding="utf-8") as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, version = line.partition("==")
            assert sep and version, f"ci/constraints.txt: {raw.strip()!r} is not an exact pin"
            assert _name(name) not in pins, f"ci/constraints.txt pins {name} twice"
            pins[_name(name)] = version.strip()
    return pins


#: Installed only into pip's isolated build environment, not the test environment (a venv
#: comes with a setuptools of its own).
_BUILD_ONLY = {"setuptools", "wheel", "cython"}


def _declared() -> set[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    reqs = list(project["build-system"]["requires"]) + list(project["project"]["dependencies"])
    for extra in ("test", "snappy", "zstd", "uvloop"):
        reqs += project["project"]["optional-dependencies"][extra]
    return {_name(r) for r in reqs}


def test_every_declared_dependency_is_pinned():
    missing = sorted(_declared() - set(_pins()))
    assert not missing, f"not pinned in ci/constraints.txt: {missing}"


@pytest.mark.skipif(os.environ.get("PIP_CONSTRAINT") is None,
                    reason="installed without ci/constraints.txt (not through ci/test.sh)")
def test_installed_versions_are_the_pinned_ones():
    """Under the README's test command every pinned package that is installed is at its
    pinned version (the build-only ones live in pip's isolated build environment)."""
    wrong = {}
    for name, version in _pins().items():
        if name in _BUILD_ONLY:
            continue
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if have != version:
            wrong[name] = (have, version)
    assert not wrong, f"installed (have, pinned): {wrong}"


def test_every_declared_dependency_is_installed():
    """The extras the suite relies on are all present: a missing one would turn its tests
    into failures on a fresh machine (or, worse, into skips)."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    absent = []
    for r in project["project"]["dependencies"] + project["project"]["optional-dependencies"]["test"]:
        try:
            metadata.version(_name(r))
        except metadata.PackageNotFoundError:
            absent.append(_name(r))
    assert not absent, f"declared but not installed: {absent}"
