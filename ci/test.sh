#!/usr/bin/env bash
# Install everything the test suite needs, build pylog's extension, run every test.
# Used by people (README) and by CI (.ci/run); safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# kcat (Debian's package) is one of the real Kafka clients the server is tested with;
# ZooKeeper (Debian's package, with a Java runtime) coordinates the cluster tests, which
# start their own server from its jars.
APT_NEED=""
command -v kcat >/dev/null 2>&1 || APT_NEED="$APT_NEED kcat"
[ -e /usr/share/java/zookeeper.jar ] || APT_NEED="$APT_NEED zookeeper"
if [ -n "$APT_NEED" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $APT_NEED >/dev/null
fi
# Every package at the version the suite is known to pass with (ci/constraints.txt); the
# environment variable reaches the pip that builds pylog's extension in isolation too.
export PIP_CONSTRAINT="$PWD/ci/constraints.txt"
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet -e ".[test]"
# -m "not long": the long randomized and crash marker runs with `pytest -m long`.
python3 -m pytest -m "not long" -p no:cacheprovider tests
