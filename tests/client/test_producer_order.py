"""When a producer keeps a partition's order across retries (#12 audit, finding 3): with
idempotence, or without it at max_in_flight=1.  (Without idempotence and with more
requests out, a refused batch may be appended after later ones, as Kafka documents for
max.in.flight.requests.per.connection > 1.)"""

from __future__ import annotations

import pytest

from pylog.client.producer import Producer
from tests.client.helpers import FlakyTransport, records_of


@pytest.mark.parametrize("settings", [
    {},                                                         # idempotent (the default)
    {"enable_idempotence": False, "acks": 1, "max_in_flight": 1},
])
def test_a_refused_batch_is_appended_before_later_ones(client, settings):
    client.create_topic("t", 1)
    # Every third produce call refused retriably, among many small batches.
    flaky = FlakyTransport(client.transport, ["retriable", "ok", "ok"] * 20)
    p = Producer(flaky, batch_size=200, linger_ms=0, retry_backoff_ms=1, retry_backoff_max_ms=2, **settings)
    values = [b"%04d" % i + b"." * 60 for i in range(300)]
    handles = [p.send("t", v, partition=0) for v in values]
    p.flush()
    assert [h.result().offset for h in handles] == list(range(300))
    assert [r.value for r in records_of(client, "t")[0]] == values
    p.close()
