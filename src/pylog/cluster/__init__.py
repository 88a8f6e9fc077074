"""pylog's cluster: brokers that replicate partitions, coordinated through ZooKeeper.

``coordination`` is the one narrow interface the cluster code talks to (broker
registration, controller election and epoch, topic assignments, partition state by
compare-and-set, watches, session lifecycle), with Kafka's znode layout;
``zookeeper`` is its production implementation on kazoo. ``replication`` is the
I/O-free replication state machine (high watermark, ISR, leader epochs, truncation).

The single-node default (``pylog serve`` without ``--zookeeper``, ``pylog.open``)
imports nothing from here. Submodules are imported by path, never from this package,
so importing ``pylog.cluster`` costs nothing and needs no ZooKeeper client.
"""
