"""Apache Kafka's tools over the transaction state pylog writes: kafka-dump-log's
--transaction-log-decoder reads pylog's ``__transaction_state`` records as Kafka's own
(TransactionLogKey / TransactionLogValue), and shows the control batches (markers) of
the data partitions a transaction ended."""

from __future__ import annotations

import json
import re

import pytest

from server.conftest import ServeProcess, _check_stopped
from server.util import unique

pytestmark = pytest.mark.timeout(900)
ck = pytest.importorskip("confluent_kafka")

DUMP_LOG = "org.apache.kafka.tools.DumpLogSegments"


def test_dump_log_decodes_pylogs_transaction_state(kafka_jars, tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from pylog.broker.txn_log import partition_for_transactional_id

    jvm = kafka_jars
    sp = ServeProcess(str(tmp_path / "data"), {"transaction.state.log.num.partitions": "3"})
    sp.start()
    tid = unique("dump-tx")
    try:
        admin = AdminClient({"bootstrap.servers": sp.bootstrap})
        admin.create_topics([NewTopic("txn-data", 2, 1)])["txn-data"].result(10)
        p = Producer({"bootstrap.servers": sp.bootstrap, "transactional.id": tid})
        p.init_transactions(10)
        p.begin_transaction()
        p.produce("txn-data", b"a", partition=0)
        p.produce("txn-data", b"b", partition=1)
        p.commit_transaction(10)
        p.begin_transaction()
        p.produce("txn-data", b"c", partition=0)
        p.flush(10)
        p.abort_transaction(10)
    finally:
        _check_stopped(sp)

    part = partition_for_transactional_id(tid, 3)
    log = tmp_path / "data" / f"__transaction_state-{part}" / "00000000000000000000.log"
    out = jvm.check(DUMP_LOG, "--transaction-log-decoder", "--files", str(log))
    records = [(json.loads(k), json.loads(v)) for k, v in re.findall(r" key: (\{.*\}) payload: (\{.*\})$", out, re.M)]
    assert records and all(k["data"]["transactionalId"] == tid for k, _ in records), out[-3000:]
    values = [v["data"] for _, v in records]
    assert [v["transactionStatus"] for v in values] == ["Empty", "Ongoing", "PrepareCommit", "CompleteCommit",
                                                         "Ongoing", "PrepareAbort", "CompleteAbort"], out[-3000:]
    assert values[2]["transactionPartitions"] == [{"topic": "txn-data", "partitionIds": [0, 1]}]
    assert values[0]["transactionPartitions"] is None         # Empty: null, as Kafka writes it
    assert {(v["producerId"], v["producerEpoch"], v["transactionTimeoutMs"]) for v in values} == {(0, 0, 60000)}

    data = tmp_path / "data" / "txn-data-0" / "00000000000000000000.log"
    out = jvm.check(DUMP_LOG, "--files", str(data), "--print-data-log")
    markers = re.findall(r"endTxnMarker: (COMMIT|ABORT) coordinatorEpoch: (\d+)", out)
    assert markers == [("COMMIT", "0"), ("ABORT", "0")], out[-3000:]
