"""kafka-python, imported as an independent oracle.

Its import emits DeprecationWarnings (importlib.resources.read_text) that the suite's
filterwarnings=error would turn into errors; they are about kafka-python, not pylog.
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as murmur2
    from kafka.protocol.consumer.metadata import (
        ConsumerProtocolAssignment as ConsumerProtocolAssignment,
        ConsumerProtocolSubscription as ConsumerProtocolSubscription,
    )
    from kafka.protocol.old.consumer_protocol import (
        ConsumerProtocolMemberAssignment_v0 as ConsumerProtocolMemberAssignment_v0,
        ConsumerProtocolMemberMetadata_v0 as ConsumerProtocolMemberMetadata_v0,
    )
    from kafka.coordinator.assignors.range import RangePartitionAssignor as RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import (
        RoundRobinPartitionAssignor as RoundRobinPartitionAssignor,
    )
