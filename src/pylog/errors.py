"""One error hierarchy for pylog, raised by Python and Cython code alike.

Every error carries Kafka's numeric error code (``error_code``) and says whether
a client may retry the operation that raised it (``retriable``), as Kafka's
``org.apache.kafka.common.errors`` classes do.  The wire-protocol server maps
an exception to its response's error code with :func:`error_code_for`, and a
client maps a code back to an exception with :func:`error_for_code`.

Errors that mean "your input was bad" also derive from the matching built-in
(``ValueError``, ``TypeError``, ``KeyError``) so ordinary ``except`` clauses
keep working.
"""

from __future__ import annotations

__all__ = [
    "PylogError",
    "UnknownServerError",
    "CorruptRecordError",
    "OffsetOutOfRangeError",
    "UnknownTopicOrPartitionError",
    "UnknownTopicError",
    "RecordTooLargeError",
    "RecordBatchTooLargeError",
    "NotLeaderError",
    "InvalidTopicError",
    "InvalidRecordError",
    "InvalidTimestampError",
    "InvalidRequestError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "TopicAlreadyExistsError",
    "UnsupportedVersionError",
    "UnsupportedCompressionTypeError",
    "CodecNotInstalledError",
    "OutOfOrderSequenceError",
    "DuplicateSequenceError",
    "InvalidProducerEpochError",
    "UnknownProducerIdError",
    "ProducerFencedError",
    "InvalidTxnStateError",
    "InvalidProducerIdMappingError",
    "InvalidTransactionTimeoutError",
    "ConcurrentTransactionsError",
    "TransactionCoordinatorFencedError",
    "OperationNotAttemptedError",
    "UnstableOffsetCommitError",
    "TransactionalIdNotFoundError",
    "TransactionAbortableError",
    "IllegalGenerationError",
    "UnknownMemberIdError",
    "RebalanceInProgressError",
    "InvalidCommitOffsetSizeError",
    "GroupSubscribedToTopicError",
    "InconsistentGroupProtocolError",
    "InvalidGroupIdError",
    "InvalidSessionTimeoutError",
    "GroupIdNotFoundError",
    "NonEmptyGroupError",
    "FencedInstanceIdError",
    "MemberIdRequiredError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "NotCoordinatorError",
    "OffsetMetadataTooLargeError",
    "RequestTimedOutError",
    "NetworkError",
    "KafkaStorageError",
    "LogClosedError",
    "DataDirInUseError",
    "PolicyViolationError",
    "NotEnoughReplicasError",
    "NotEnoughReplicasAfterAppendError",
    "FencedLeaderEpochError",
    "UnknownLeaderEpochError",
    "InvalidRequiredAcksError",
    "InvalidReplicationFactorError",
    "CommitFailedError",
    "NoOffsetForPartitionError",
    "RecordTypeError",
    "RecordDeserializationError",
    "IllegalStateError",
    "NotControllerError",
    "InvalidUpdateVersionError",
    "BrokerNotAvailableError",
    "InvalidReplicaAssignmentError",
    "ReassignmentInProgressError",
    "NoReassignmentInProgressError",
    "StaleBrokerEpochError",
    "PreferredLeaderNotAvailableError",
    "EligibleLeadersNotAvailableError",
    "ElectionNotNeededError",
    "IneligibleReplicaError",
    "LeaderNotAvailableError",
    "ReplicaNotAvailableError",
    "TopicAuthorizationFailedError",
    "GroupAuthorizationFailedError",
    "ClusterAuthorizationFailedError",
    "FetchSessionIdNotFoundError",
    "InvalidFetchSessionEpochError",
    "ListenerNotFoundError",
    "TopicDeletionDisabledError",
    "OffsetNotAvailableError",
    "GroupMaxSizeReachedError",
    "ThrottlingQuotaExceededError",
    "UnknownTopicIdError",
    "InconsistentTopicIdError",
    "FetchSessionTopicIdError",
    "KafkaError",
    "CoordinationError",
    "CorruptCoordinationDataError",
    "error_for_code",
    "error_code_for",
]


class PylogError(Exception):
    """Base of every pylog error.

    Attributes
    ----------
    error_code : int
        Kafka's error code for this condition (``-1``: UNKNOWN_SERVER_ERROR).
    retriable : bool
        True when the same operation may succeed if tried again later.
    """

    error_code: int = -1
    retriable: bool = False
    #: Kafka's name for the code, as clients print it.
    kafka_name: str = "UNKNOWN_SERVER_ERROR"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.kafka_name)

    @property
    def message(self) -> str:
        return str(self)


class UnknownServerError(PylogError):
    error_code, kafka_name = -1, "UNKNOWN_SERVER_ERROR"


class OffsetOutOfRangeError(PylogError, IndexError):
    error_code, kafka_name = 1, "OFFSET_OUT_OF_RANGE"


class CorruptRecordError(PylogError, ValueError):
    """A record batch failed validation: bad size, magic, CRC, counts or offsets."""

    error_code, kafka_name, retriable = 2, "CORRUPT_MESSAGE", True


class UnknownTopicOrPartitionError(PylogError, KeyError):
    error_code, kafka_name, retriable = 3, "UNKNOWN_TOPIC_OR_PARTITION", True

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


UnknownTopicError = UnknownTopicOrPartitionError


class NoOffsetForPartitionError(OffsetOutOfRangeError):
    """A consumer has no committed offset for a partition and ``auto_offset_reset`` is
    ``"none"``: seek() it, or choose ``"earliest"`` / ``"latest"``."""


class NotLeaderError(PylogError):
    error_code, kafka_name, retriable = 6, "NOT_LEADER_OR_FOLLOWER", True


class RequestTimedOutError(PylogError):
    error_code, kafka_name, retriable = 7, "REQUEST_TIMED_OUT", True


class NetworkError(PylogError, ConnectionError):
    """The connection to a broker failed or was closed (refused, reset, closed mid-response,
    a malformed or over-large response frame, a response that answers another request).
    The request may or may not have been processed: retry it (idempotently) later."""

    error_code, kafka_name, retriable = 13, "NETWORK_EXCEPTION", True


class RecordTooLargeError(PylogError, ValueError):
    """A record or batch is larger than ``max.message.bytes`` / ``segment.bytes``."""

    error_code, kafka_name = 10, "MESSAGE_TOO_LARGE"


class OffsetMetadataTooLargeError(PylogError, ValueError):
    error_code, kafka_name = 12, "OFFSET_METADATA_TOO_LARGE"


class CoordinatorLoadInProgressError(PylogError):
    """The coordinator is loading the groups or transactions of the partition it just
    took over; retry shortly."""

    error_code, kafka_name, retriable = 14, "COORDINATOR_LOAD_IN_PROGRESS", True


class CoordinatorNotAvailableError(PylogError):
    error_code, kafka_name, retriable = 15, "COORDINATOR_NOT_AVAILABLE", True


class NotCoordinatorError(PylogError):
    error_code, kafka_name, retriable = 16, "NOT_COORDINATOR", True


class InvalidTopicError(PylogError, ValueError):
    error_code, kafka_name = 17, "INVALID_TOPIC_EXCEPTION"


class RecordBatchTooLargeError(RecordTooLargeError):
    error_code, kafka_name = 18, "RECORD_LIST_TOO_LARGE"


class IllegalGenerationError(PylogError):
    error_code, kafka_name = 22, "ILLEGAL_GENERATION"


class CommitFailedError(IllegalGenerationError):
    """A consumer's commit was refused because the group moved on: the member no longer
    owns a partition it commits, or its generation is stale.  Rejoin (poll) and retry."""


class InconsistentGroupProtocolError(PylogError):
    error_code, kafka_name = 23, "INCONSISTENT_GROUP_PROTOCOL"


class InvalidGroupIdError(PylogError, ValueError):
    error_code, kafka_name = 24, "INVALID_GROUP_ID"


class UnknownMemberIdError(PylogError):
    error_code, kafka_name = 25, "UNKNOWN_MEMBER_ID"


class InvalidSessionTimeoutError(PylogError, ValueError):
    error_code, kafka_name = 26, "INVALID_SESSION_TIMEOUT"


class RebalanceInProgressError(PylogError):
    error_code, kafka_name = 27, "REBALANCE_IN_PROGRESS"


class InvalidCommitOffsetSizeError(PylogError):
    """An offset commit's records were too large for ``__consumer_offsets``."""

    error_code, kafka_name = 28, "INVALID_COMMIT_OFFSET_SIZE"


class InvalidTimestampError(PylogError, ValueError):
    error_code, kafka_name = 32, "INVALID_TIMESTAMP"


class UnsupportedVersionError(PylogError):
    error_code, kafka_name = 35, "UNSUPPORTED_VERSION"


class NotEnoughReplicasError(PylogError):
    """acks=all, and fewer in-sync replicas than the topic's ``min.insync.replicas``."""

    error_code, kafka_name, retriable = 19, "NOT_ENOUGH_REPLICAS", True


class NotEnoughReplicasAfterAppendError(PylogError):
    """acks=all: the batch was appended, but the in-sync replicas shrank below
    ``min.insync.replicas`` before it was committed (it may still be replicated)."""

    error_code, kafka_name, retriable = 20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", True


class FencedLeaderEpochError(PylogError):
    """The request named an older leader epoch than the replica's: the sender's metadata
    is stale; refresh it and retry against the current leader."""

    error_code, kafka_name, retriable = 74, "FENCED_LEADER_EPOCH", True


class UnknownLeaderEpochError(PylogError):
    """The request named a newer leader epoch than the replica knows: the replica has
    not yet heard of the leader change; retry after a short wait."""

    error_code, kafka_name, retriable = 75, "UNKNOWN_LEADER_EPOCH", True


class InvalidRequiredAcksError(PylogError, ValueError):
    error_code, kafka_name = 21, "INVALID_REQUIRED_ACKS"


class TopicAlreadyExistsError(PylogError):
    error_code, kafka_name = 36, "TOPIC_ALREADY_EXISTS"


class InvalidPartitionsError(PylogError, ValueError):
    error_code, kafka_name = 37, "INVALID_PARTITIONS"


class InvalidReplicationFactorError(PylogError, ValueError):
    error_code, kafka_name = 38, "INVALID_REPLICATION_FACTOR"


class InvalidConfigError(PylogError, ValueError):
    error_code, kafka_name = 40, "INVALID_CONFIG"


class InvalidRequestError(PylogError, ValueError):
    error_code, kafka_name = 42, "INVALID_REQUEST"


class PolicyViolationError(PylogError):
    error_code, kafka_name = 44, "POLICY_VIOLATION"


class OutOfOrderSequenceError(PylogError):
    error_code, kafka_name = 45, "OUT_OF_ORDER_SEQUENCE_NUMBER"


class DuplicateSequenceError(PylogError):
    error_code, kafka_name = 46, "DUPLICATE_SEQUENCE_NUMBER"


class InvalidProducerEpochError(PylogError):
    error_code, kafka_name = 47, "INVALID_PRODUCER_EPOCH"


class KafkaStorageError(PylogError, OSError):
    """The log could not be read or written (disk full, I/O error)."""

    error_code, kafka_name, retriable = 56, "KAFKA_STORAGE_ERROR", True


class LogClosedError(KafkaStorageError):
    """An operation on a log (or broker) that has been closed."""


class DataDirInUseError(KafkaStorageError):
    """The data directory is already open, in this process or another one (it holds
    ``<data_dir>/.lock``): close that broker or log manager first, or use another
    directory."""

    retriable = False


class InvalidTxnStateError(PylogError):
    """The request is not allowed in the transaction's current state (a partition not
    added to the transaction, EndTxn while another outcome is being written)."""

    error_code, kafka_name = 48, "INVALID_TXN_STATE"


class InvalidProducerIdMappingError(PylogError):
    """The producer id is not the one the transactional id holds (call InitProducerId)."""

    error_code, kafka_name = 49, "INVALID_PRODUCER_ID_MAPPING"


class InvalidTransactionTimeoutError(PylogError, ValueError):
    """``transaction.timeout.ms`` is not positive or exceeds the broker's
    ``transaction.max.timeout.ms``: lower the producer's setting."""

    error_code, kafka_name = 50, "INVALID_TRANSACTION_TIMEOUT"


class ConcurrentTransactionsError(PylogError):
    """The transactional id's previous transaction is still being completed: retry."""

    error_code, kafka_name, retriable = 51, "CONCURRENT_TRANSACTIONS", True


class TransactionCoordinatorFencedError(PylogError):
    error_code, kafka_name = 52, "TRANSACTION_COORDINATOR_FENCED"


class OperationNotAttemptedError(PylogError):
    """Another part of the same request failed, so this part was not tried."""

    error_code, kafka_name = 55, "OPERATION_NOT_ATTEMPTED"


class UnstableOffsetCommitError(PylogError):
    """A transactional offset commit of the partition is still pending (OffsetFetch with
    require_stable): retry once the transaction ends."""

    error_code, kafka_name, retriable = 88, "UNSTABLE_OFFSET_COMMIT", True


class TransactionalIdNotFoundError(PylogError):
    error_code, kafka_name = 105, "TRANSACTIONAL_ID_NOT_FOUND"


class TransactionAbortableError(PylogError):
    error_code, kafka_name = 120, "TRANSACTION_ABORTABLE"


class TransactionAbortedError(PylogError):
    """The record's transaction was aborted before the record was sent (Kafka's
    client-side TransactionAbortedException): it was never appended; send it again in a
    new transaction."""


class UnknownProducerIdError(PylogError):
    error_code, kafka_name = 59, "UNKNOWN_PRODUCER_ID"


class NonEmptyGroupError(PylogError):
    error_code, kafka_name = 68, "NON_EMPTY_GROUP"


class GroupIdNotFoundError(PylogError, KeyError):
    error_code, kafka_name = 69, "GROUP_ID_NOT_FOUND"

    def __str__(self) -> str:
        return Exception.__str__(self)


class GroupSubscribedToTopicError(PylogError):
    """OffsetDelete of a topic the (non-empty) consumer group is still subscribed to."""

    error_code, kafka_name = 86, "GROUP_SUBSCRIBED_TO_TOPIC"


class UnsupportedCompressionTypeError(PylogError, ValueError):
    error_code, kafka_name = 76, "UNSUPPORTED_COMPRESSION_TYPE"


class CodecNotInstalledError(UnsupportedCompressionTypeError):
    """A batch uses a codec whose optional package is not installed.

    The message names the extra to install, e.g. ``pip install pylog[zstd]``.
    """


class MemberIdRequiredError(PylogError):
    error_code, kafka_name = 79, "MEMBER_ID_REQUIRED"


class FencedInstanceIdError(PylogError):
    error_code, kafka_name = 82, "FENCED_INSTANCE_ID"


class InvalidRecordError(PylogError, ValueError):
    error_code, kafka_name = 87, "INVALID_RECORD"


class RecordTypeError(InvalidRecordError, TypeError):
    """A record's key, value or headers have the wrong type (serialize them to bytes
    first, or give the producer a ``key_serializer`` / ``value_serializer``)."""


class RecordDeserializationError(InvalidRecordError):
    """A consumer's key or value deserializer raised.  ``topic``, ``partition`` and
    ``offset`` name the record; ``seek(offset + 1)`` skips it."""

    def __init__(self, message: str | None = None, *, topic: str | None = None,
                 partition: int | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset


class IllegalStateError(PylogError, RuntimeError):
    """A call that the object's state does not allow (a closed producer or consumer,
    poll() with nothing subscribed or assigned)."""


class ProducerFencedError(PylogError):
    error_code, kafka_name = 90, "PRODUCER_FENCED"


class NotControllerError(PylogError):
    """This broker is not (or no longer) the controller: a controller write was fenced
    because another broker has since been elected and bumped the controller epoch
    (Kafka's ControllerMovedException answers as NOT_CONTROLLER)."""
    error_code, kafka_name, retriable = 41, "NOT_CONTROLLER", True


class InvalidUpdateVersionError(PylogError):
    """A compare-and-set of partition state named a version (ZooKeeper zkVersion) that
    is no longer the current one: someone wrote newer state, so a zombie controller or
    leader cannot overwrite it. Re-read the state and decide again."""
    error_code, kafka_name = 95, "INVALID_UPDATE_VERSION"


# The cluster controller's answers (pylog.cluster.controller).

class BrokerNotAvailableError(PylogError):
    error_code, kafka_name = 8, "BROKER_NOT_AVAILABLE"


class InvalidReplicaAssignmentError(PylogError, ValueError):
    """A replica assignment names an unknown broker, a broker twice, or mixes partitions of
    different replication factors (or brokers with and without ``broker.rack``)."""
    error_code, kafka_name = 39, "INVALID_REPLICA_ASSIGNMENT"


class ReassignmentInProgressError(PylogError):
    """The topic cannot be changed (deleted, given partitions) while its partitions move."""
    error_code, kafka_name = 60, "REASSIGNMENT_IN_PROGRESS"


class NoReassignmentInProgressError(PylogError):
    error_code, kafka_name = 85, "NO_REASSIGNMENT_IN_PROGRESS"


class StaleBrokerEpochError(PylogError):
    """A broker's request carried the epoch of a registration that is gone (it restarted
    or lost its ZooKeeper session since)."""
    error_code, kafka_name = 77, "STALE_BROKER_EPOCH"


class PreferredLeaderNotAvailableError(PylogError):
    error_code, kafka_name, retriable = 80, "PREFERRED_LEADER_NOT_AVAILABLE", True


class EligibleLeadersNotAvailableError(PylogError):
    error_code, kafka_name, retriable = 83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", True


class ElectionNotNeededError(PylogError):
    """The partition's leader is already the one the election would choose."""
    error_code, kafka_name, retriable = 84, "ELECTION_NOT_NEEDED", True


class IneligibleReplicaError(PylogError):
    """An ISR change named a replica that may not join the ISR (not live, or shutting down)."""
    error_code, kafka_name = 107, "INELIGIBLE_REPLICA"


class LeaderNotAvailableError(PylogError):
    """The partition has no leader right now (an election is under way, or a topic's
    leaders are not known yet): refresh metadata and try again."""
    error_code, kafka_name, retriable = 5, "LEADER_NOT_AVAILABLE", True


class ReplicaNotAvailableError(PylogError):
    error_code, kafka_name, retriable = 9, "REPLICA_NOT_AVAILABLE", True


class TopicAuthorizationFailedError(PylogError):
    error_code, kafka_name = 29, "TOPIC_AUTHORIZATION_FAILED"


class GroupAuthorizationFailedError(PylogError):
    error_code, kafka_name = 30, "GROUP_AUTHORIZATION_FAILED"


class ClusterAuthorizationFailedError(PylogError):
    error_code, kafka_name = 31, "CLUSTER_AUTHORIZATION_FAILED"


class FetchSessionIdNotFoundError(PylogError):
    error_code, kafka_name, retriable = 70, "FETCH_SESSION_ID_NOT_FOUND", True


class InvalidFetchSessionEpochError(PylogError):
    error_code, kafka_name, retriable = 71, "INVALID_FETCH_SESSION_EPOCH", True


class ListenerNotFoundError(PylogError):
    error_code, kafka_name, retriable = 72, "LISTENER_NOT_FOUND", True


class TopicDeletionDisabledError(PylogError):
    error_code, kafka_name = 73, "TOPIC_DELETION_DISABLED"


class OffsetNotAvailableError(PylogError):
    error_code, kafka_name, retriable = 78, "OFFSET_NOT_AVAILABLE", True


class GroupMaxSizeReachedError(PylogError):
    error_code, kafka_name = 81, "GROUP_MAX_SIZE_REACHED"


class ThrottlingQuotaExceededError(PylogError):
    error_code, kafka_name, retriable = 89, "THROTTLING_QUOTA_EXCEEDED", True


class UnknownTopicIdError(PylogError):
    error_code, kafka_name, retriable = 100, "UNKNOWN_TOPIC_ID", True


class InconsistentTopicIdError(PylogError):
    error_code, kafka_name, retriable = 103, "INCONSISTENT_TOPIC_ID", True


class FetchSessionTopicIdError(PylogError):
    error_code, kafka_name, retriable = 106, "FETCH_SESSION_TOPIC_ID_ERROR", True


class KafkaError(PylogError):
    """A Kafka error code pylog has no class of its own for (SASL, delegation tokens,
    KRaft voters, share groups, ...): the code, Kafka's name and whether Kafka's clients
    retry it come from :data:`_OTHER_CODES`."""

    def __init__(self, code: int, message: str | None = None) -> None:
        self.error_code = code
        self.kafka_name, self.retriable = _OTHER_CODES[code]
        super().__init__(message if message is not None else self.kafka_name)


#: Kafka's codes with no class above: (name, retriable), as in Kafka's ``Errors`` table.
_OTHER_CODES: dict[int, tuple[str, bool]] = {
    4: ("INVALID_FETCH_SIZE", False), 11: ("STALE_CONTROLLER_EPOCH", False),
    33: ("UNSUPPORTED_SASL_MECHANISM", False), 34: ("ILLEGAL_SASL_STATE", False),
    43: ("UNSUPPORTED_FOR_MESSAGE_FORMAT", False), 53: ("TRANSACTIONAL_ID_AUTHORIZATION_FAILED", False),
    54: ("SECURITY_DISABLED", False), 57: ("LOG_DIR_NOT_FOUND", False),
    58: ("SASL_AUTHENTICATION_FAILED", False), 61: ("DELEGATION_TOKEN_AUTH_DISABLED", False),
    62: ("DELEGATION_TOKEN_NOT_FOUND", False), 63: ("DELEGATION_TOKEN_OWNER_MISMATCH", False),
    64: ("DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", False), 65: ("DELEGATION_TOKEN_AUTHORIZATION_FAILED", False),
    66: ("DELEGATION_TOKEN_EXPIRED", False), 67: ("INVALID_PRINCIPAL_TYPE", False),
    91: ("RESOURCE_NOT_FOUND", False), 92: ("DUPLICATE_RESOURCE", False),
    93: ("UNACCEPTABLE_CREDENTIAL", False), 94: ("INCONSISTENT_VOTER_SET", False),
    96: ("FEATURE_UPDATE_FAILED", False), 97: ("PRINCIPAL_DESERIALIZATION_FAILURE", False),
    98: ("SNAPSHOT_NOT_FOUND", False), 99: ("POSITION_OUT_OF_RANGE", False),
    101: ("DUPLICATE_BROKER_REGISTRATION", False),
    102: ("BROKER_ID_NOT_REGISTERED", False), 104: ("INCONSISTENT_CLUSTER_ID", False),
    108: ("NEW_LEADER_ELECTED", False), 109: ("OFFSET_MOVED_TO_TIERED_STORAGE", False),
    110: ("FENCED_MEMBER_EPOCH", False), 111: ("UNRELEASED_INSTANCE_ID", False),
    112: ("UNSUPPORTED_ASSIGNOR", False), 113: ("STALE_MEMBER_EPOCH", False),
    114: ("MISMATCHED_ENDPOINT_TYPE", False), 115: ("UNSUPPORTED_ENDPOINT_TYPE", False),
    116: ("UNKNOWN_CONTROLLER_ID", False), 117: ("UNKNOWN_SUBSCRIPTION_ID", False),
    118: ("TELEMETRY_TOO_LARGE", False), 119: ("INVALID_REGISTRATION", False),
    121: ("INVALID_RECORD_STATE", False), 122: ("SHARE_SESSION_NOT_FOUND", True),
    123: ("INVALID_SHARE_SESSION_EPOCH", True), 124: ("FENCED_STATE_EPOCH", False),
    125: ("INVALID_VOTER_KEY", False), 126: ("DUPLICATE_VOTER", False),
    127: ("VOTER_NOT_FOUND", False), 128: ("INVALID_REGULAR_EXPRESSION", False),
}


class CoordinationError(PylogError):
    """The coordination store (ZooKeeper) could not do an operation: not connected
    within the timeout, the session expired, or a znode is not where it should be."""
    retriable = True


class CorruptCoordinationDataError(CoordinationError, ValueError):
    """A znode holds data that is not the JSON layout Kafka writes there (the path and
    the offending bytes are in the message); pylog never acts on such data."""
    retriable = False


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[int, type[PylogError]] = {}
for _cls in [PylogError, *_all_subclasses(PylogError)]:
    # The first class declared for a code is its canonical exception.
    _BY_CODE.setdefault(_cls.error_code, _cls)
_BY_CODE[-1] = UnknownServerError


def error_for_code(code: int, message: str | None = None) -> PylogError:
    """Return the exception instance for Kafka error ``code``: its class above, a
    :class:`KafkaError` with Kafka's name and retriable flag for the rest of Kafka's
    table, or :class:`UnknownServerError` (naming the number) for a code Kafka lacks."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    if code in _OTHER_CODES:
        return KafkaError(code, message)
    # As Kafka's Errors.forCode: a code it does not define is UNKNOWN_SERVER_ERROR.
    return UnknownServerError(message or f"Kafka error code {code}")


def error_code_for(exc: BaseException) -> int:
    """Kafka error code to put in a response for ``exc`` (-1 for non-pylog errors)."""
    if isinstance(exc, PylogError):
        return exc.error_code
    return -1
