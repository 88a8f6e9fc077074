"""A topic, and partitions added to one, appear to readers all at once, once every log
exists, as a KRaft broker publishes a topic's records together: metadata never shows a
topic with fewer partitions than it was created with (Kafka's AdminClient takes a topic
without partitions for an unknown one; Kafka Streams failed on that against pylog serve)."""

from __future__ import annotations

import pylog


def test_topic_and_new_partitions_are_published_whole(tmp_path, monkeypatch):
    with pylog.Broker.open(str(tmp_path / "data")) as broker:
        seen = []
        create_log = broker.logs.get_or_create_log

        def observe(topic, partition, config):
            # What another thread would see while this log is being created.
            seen.append((partition, broker.has_topic(topic), topic in broker.list_topics(),
                         broker.num_partitions(topic) if broker.has_topic(topic) else None))
            return create_log(topic, partition, config)

        monkeypatch.setattr(broker.logs, "get_or_create_log", observe)
        broker.create_topic("t", 3)
        assert seen == [(0, False, False, None), (1, False, False, None), (2, False, False, None)]
        assert broker.num_partitions("t") == 3

        seen.clear()
        broker.create_partitions("t", 5)
        assert seen == [(3, True, True, 3), (4, True, True, 3)]
        assert broker.num_partitions("t") == 5
