"""DescribeConfigs of the BROKER resource: `pylog serve` answers as Apache Kafka does.

Both servers are asked the same DescribeConfigs (v4, include_synonyms) over pylog's wire
tool, and every broker config is compared: name, value, source, read_only, is_sensitive,
config_type and synonyms.  pylog serve is started with the same static settings as the
kafka_ref broker (those pylog has a meaning for).  What differs for a reason is the short
list :data:`MAY_DIFFER` (each entry with its reason) and one rule: a config Kafka can
change at run time but pylog does not implement is read-only on pylog (nothing to change).
Then the synonym chain of log.retention.ms is compared after a cluster-wide dynamic change.
"""

from __future__ import annotations

import pytest

from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from pylog.server.config import read_properties_file
from pylog.server.dynamic_config import DYNAMIC_CONFIGS
from server.conftest import ServeProcess
from server.util import wait_for
from tests.kafka_ref import gen_broker_defaults as gen
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(900)

#: Broker configs whose value or source legitimately differs, with the reason.
MAY_DIFFER = {
    # Where each server runs: ids, addresses, paths, KRaft roles (Kafka's fixture sets them).
    "node.id": "node ids differ (Kafka's fixture: 1; pylog: 0)",
    "broker.id": "node ids differ",
    "listeners": "addresses differ; Kafka's also holds its controller listener",
    "advertised.listeners": "addresses differ",
    "controller.listener.names": "KRaft controller: Kafka's fixture only",
    "controller.quorum.voters": "KRaft controller: Kafka's fixture only",
    "inter.broker.listener.name": "set in Kafka's fixture; one pylog node has no inter-broker listener",
    "listener.security.protocol.map": "set in Kafka's fixture for its controller listener",
    "process.roles": "KRaft roles: Kafka's fixture only",
    "log.dirs": "paths differ",
    "log.dir": "a path: Kafka's default (/tmp/kafka-logs, unused when log.dirs is set); pylog names none",
    "min.insync.replicas": ("`kafka-storage format` writes it as a cluster-wide dynamic config (KIP-966), "
                            "pylog's is the default; the value is compared"),
    # Set for Kafka's single node only; pylog has no such setting (ignored with a WARN).
    "offsets.topic.replication.factor": "Kafka's fixture sets it for one node; pylog has no setting",
    "transaction.state.log.replication.factor": "Kafka's fixture sets it for one node; pylog has no setting",
    "transaction.state.log.min.isr": "Kafka's fixture sets it for one node; pylog has no setting",
    # pylog's own defaults, documented in pylog.server.config.ServerConfig.
    "max.connections": "pylog caps connections at 16384 by default (Kafka: no cap)",
    "num.recovery.threads.per.data.dir": ("pylog recovers with 8 threads by default (Kafka 4: 2): its "
                                          "recovery scan runs without the GIL; see bench_scale's UncleanOpen"),
    "queued.max.request.bytes": "pylog bounds buffered requests at 512 MiB by default (Kafka: -1)",
    "log.flush.scheduler.interval.ms": "the test servers' override (200 ms; Kafka's default never)",
}


def describe(bootstrap: str, name: str | None = None, keys: list[str] | None = None) -> dict[str, dict]:
    with WireClient(bootstrap) as c:
        if name is None:
            name = str(c.bootstrap.request(ApiKey.METADATA, m.MetadataRequest(
                topics=[], allow_auto_topic_creation=False)).brokers[0].node_id)
        configs = gen.describe(c, name, keys)
    return {e.name: {"value": e.value, "source": e.config_source, "read_only": e.read_only,
                     "sensitive": e.is_sensitive, "type": e.config_type,
                     "synonyms": [(s.name, s.value, s.source) for s in e.synonyms]} for e in configs}


def set_default(bootstrap: str, values: dict[str, str | None]) -> None:
    with WireClient(bootstrap) as c:
        gen.set_default(c, values)


@pytest.fixture(scope="module")
def twin(kafka_broker, tmp_path_factory):
    """`pylog serve` with the static settings of the kafka_ref broker that pylog knows."""
    props = read_properties_file(kafka_broker.dir / "server.properties")
    overrides = {k: v for k, v in props.items() if k not in MAY_DIFFER}
    sp = ServeProcess(str(tmp_path_factory.mktemp("twin")), overrides)
    sp.start()
    try:
        yield sp
    finally:
        assert sp.stop() == 0, sp.log_text()[-3000:]


def test_broker_configs_same_as_apache_kafka(kafka_broker, twin):
    kafka, pylog = describe(kafka_broker.bootstrap), describe(twin.bootstrap)
    assert sorted(pylog) == sorted(kafka), (
        f"only Kafka: {sorted(set(kafka) - set(pylog))}; only pylog: {sorted(set(pylog) - set(kafka))}")
    diffs = []
    for name in sorted(kafka):
        k, p = dict(kafka[name]), dict(pylog[name])
        if name in MAY_DIFFER:
            if name == "min.insync.replicas":
                assert p["value"] == k["value"]
            continue
        if not k["read_only"] and p["read_only"]:
            assert name not in DYNAMIC_CONFIGS
            k["read_only"] = True  # a config pylog does not implement: read-only there
        if k != p:
            diffs.append(f"{name}:\n  Apache Kafka: {k}\n  pylog:        {p}")
    assert not diffs, "pylog serve describes broker configs unlike Apache Kafka:\n" + "\n".join(diffs)
    # The comparison is worth something: the retention chain is there, as Kafka has it.
    assert pylog["log.retention.hours"]["value"] == "168"
    # The fixture broker's static log.retention.ms=-1, described as a static broker config.
    assert (pylog["log.retention.ms"]["value"], pylog["log.retention.ms"]["source"]) == ("-1", 4)
    assert pylog["ssl.key.password"]["sensitive"] is True


@pytest.mark.parametrize("chain", [c for c in gen.CHAINS if c[0] != "log.flush.interval.ms"],
                         ids=lambda c: c[0])
def test_dynamic_synonym_chains_same_as_apache_kafka(kafka_broker, twin, chain):
    """Each chain's head set as a cluster-wide dynamic config: the chain as both describe
    it, on the broker and on the cluster-default resource.  (log.flush.interval.ms is left
    out: its synonym log.flush.scheduler.interval.ms is in MAY_DIFFER.)"""
    head = chain[0]
    value = str(int(gen.PROBE[head]) + 1)
    keys = list(chain)
    answers = {}
    for server in (kafka_broker, twin):
        set_default(server.bootstrap, {head: value})
        try:
            # Kafka applies a dynamic config when its metadata log reaches the broker.
            got = wait_for(lambda: (lambda d: d if d[head]["value"] == value else None)(
                describe(server.bootstrap, keys=keys)), f"the dynamic {head}")
            default = describe(server.bootstrap, "", keys)
        finally:
            set_default(server.bootstrap, {head: None})
        answers[server.bootstrap] = (got, default)
    kafka, pylog = answers[kafka_broker.bootstrap], answers[twin.bootstrap]
    assert pylog == kafka
    assert (pylog[0][head]["value"], pylog[0][head]["source"]) == (value, 3)
    assert pylog[0][head]["synonyms"][0] == (head, value, 3)


def test_kafka_configs_tool_describes_the_same_broker_configs(kafka_jars, kafka_broker, twin):
    """`kafka-configs --describe --all --broker N` (Kafka's ConfigCommand) prints the same
    lines for both servers, but for the keys of MAY_DIFFER."""
    def lines(bootstrap: str) -> list[str]:
        node = describe(bootstrap, keys=["node.id"])["node.id"]["value"]
        out = kafka_jars.check("org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", bootstrap,
                               "--describe", "--all", "--broker", node)
        head, *rest = out.splitlines()
        assert head == f"All configs for broker {node} are:"
        return [x for x in rest if x.strip().partition("=")[0] not in MAY_DIFFER]

    kafka, pylog = lines(kafka_broker.bootstrap), lines(twin.bootstrap)
    assert len(kafka) > 300
    assert pylog == kafka
