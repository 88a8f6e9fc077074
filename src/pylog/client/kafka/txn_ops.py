"""Transaction requests of the Kafka-protocol transport (KIP-98): InitProducerId with a
transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn to the transaction
coordinator, TxnOffsetCommit to the group coordinator.

:class:`TxnOps` finds the coordinator (FindCoordinator with key type 1 for a
transactional id, 0 for a group) through
:meth:`GroupOps.coordinator_call <pylog.client.kafka.group_ops.GroupOps.coordinator_call>`,
which repeats a request at the rediscovered coordinator on NOT_COORDINATOR,
COORDINATOR_NOT_AVAILABLE and COORDINATOR_LOAD_IN_PROGRESS.  CONCURRENT_TRANSACTIONS (the
previous transaction of the id is still being completed) is retried here after a short
backoff, as Kafka's TransactionManager does, until ``request_timeout_ms``; every other
answer is returned as its error code for the producer to judge (fatal, abortable).
AddPartitionsToTxn is sent at version 3 or lower: versions 4+ are the brokers' own.

Threads: every method blocks its caller for its round trips and may be called from any
thread but the network client's I/O thread, except ``add_partitions_to_txn_async`` (the
transactional producer's sender adds partitions without waiting), which returns at once
and may be called from that thread too.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

from pylog.broker.core import InitProducerIdResult
from pylog.client.kafka.cluster import CoordinatorType
from pylog.client.kafka.group_ops import GroupOps, _commit_request
from pylog.errors import PylogError
from pylog.protocol import messages as _messages
from pylog.protocol.apis import ApiKey

__all__ = ["TxnOps"]

m: Any = _messages

_CONCURRENT_TRANSACTIONS = 51
#: AddPartitionsToTxn v4+ batches transactions for brokers (KIP-890); clients send v3.
_ADD_PARTITIONS_CLIENT_VERSION = 3
#: Kafka's TransactionManager retries the first AddPartitionsToTxn of a transaction this
#: soon after CONCURRENT_TRANSACTIONS (the previous transaction is completing).
_CONCURRENT_BACKOFF_S = 0.02


def _first_error(codes: Iterable[int]) -> int:
    """The first non-zero code (0: none): the one that says whether to retry."""
    return next((c for c in codes if c), 0)


def _add_partitions_request(transactional_id: str, producer_id: int, producer_epoch: int,
                            partitions: Iterable[tuple[str, int]]) -> tuple[dict[str, list[int]], Any, Any]:
    """AddPartitionsToTxn (v3 and below) of ``partitions``: (topic -> partitions, the
    body, the answer's first error code as a function of the response)."""
    topics: dict[str, list[int]] = {}
    for t, p in partitions:
        topics.setdefault(t, []).append(p)
    R = m.AddPartitionsToTxnRequest
    body = R(v3_and_below_transactional_id=transactional_id, v3_and_below_producer_id=producer_id,
             v3_and_below_producer_epoch=producer_epoch,
             v3_and_below_topics=[R.AddPartitionsToTxnTopic(name=t, partitions=ps) for t, ps in topics.items()])

    def code_of(resp: Any) -> int:
        return _first_error(p.partition_error_code for t in resp.results_by_topic_v3_and_below
                            for p in t.results_by_partition)

    return topics, body, code_of


def _add_partitions_result(topics: dict[str, list[int]], resp: Any) -> dict[tuple[str, int], int]:
    out = {(t, p): 0 for t, ps in topics.items() for p in ps}
    for t in resp.results_by_topic_v3_and_below:
        for p in t.results_by_partition:
            out[(t.name, p.partition_index)] = p.partition_error_code
    return out


class TxnOps:
    """The transaction requests over ``groups``' network client (see the module docstring)."""

    def __init__(self, groups: GroupOps, *, request_timeout_ms: int, retry_backoff: float) -> None:
        self._groups = groups
        self.request_timeout_ms = request_timeout_ms
        self._retry_backoff = retry_backoff

    def _call(self, key: str, key_type: int, api_key: int, body: Any, code_of: Any, *,
              version: int | None = None, concurrent_backoff: float | None = None) -> Any:
        """The coordinator's answer; CONCURRENT_TRANSACTIONS retried until the deadline."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        backoff = self._retry_backoff if concurrent_backoff is None else concurrent_backoff
        while True:
            resp = self._groups.wait(self._groups.coordinator_call(
                key, api_key, body, deadline=deadline, coordinator_code=code_of, key_type=key_type,
                version=version), deadline)
            if code_of(resp) != _CONCURRENT_TRANSACTIONS or time.monotonic() + backoff >= deadline:
                return resp
            time.sleep(backoff)

    def init_producer_id(self, transactional_id: str, transaction_timeout_ms: int, producer_id: int = -1,
                         producer_epoch: int = -1) -> InitProducerIdResult:
        """InitProducerId at the transactional id's coordinator (a bump of ``producer_id``
        / ``producer_epoch`` when given, KIP-360, v3+)."""

        def body(version: int) -> Any:
            req = m.InitProducerIdRequest(transactional_id=transactional_id,
                                          transaction_timeout_ms=transaction_timeout_ms)
            if version >= 3:
                req.producer_id, req.producer_epoch = producer_id, producer_epoch
            return req

        try:
            resp = self._call(transactional_id, CoordinatorType.TRANSACTION, ApiKey.INIT_PRODUCER_ID, body,
                              lambda r: r.error_code)
        except PylogError as exc:
            return InitProducerIdResult(error_code=exc.error_code, error_message=str(exc))
        return InitProducerIdResult(error_code=resp.error_code, producer_id=resp.producer_id,
                                    producer_epoch=resp.producer_epoch)

    def add_partitions_to_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                              partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        topics, body, code_of = _add_partitions_request(transactional_id, producer_id, producer_epoch, partitions)
        if not topics:
            return {}
        try:
            resp = self._call(transactional_id, CoordinatorType.TRANSACTION, ApiKey.ADD_PARTITIONS_TO_TXN, body,
                              code_of, version=_ADD_PARTITIONS_CLIENT_VERSION,
                              concurrent_backoff=min(self._retry_backoff, _CONCURRENT_BACKOFF_S))
        except PylogError as exc:
            return {(t, p): exc.error_code for t, ps in topics.items() for p in ps}
        return _add_partitions_result(topics, resp)

    def add_partitions_to_txn_async(self, transactional_id: str, producer_id: int, producer_epoch: int,
                                    partitions: Iterable[tuple[str, int]],
                                    on_done: Callable[[dict[tuple[str, int], int]], object]) -> None:
        """AddPartitionsToTxn without waiting: ``on_done({(topic, partition): code})`` runs
        once, on the network client's I/O thread (or here, when the request cannot be
        queued).  CONCURRENT_TRANSACTIONS is not retried: it is the code of every
        partition, for the caller to retry after a short backoff.  May be called from
        the I/O thread (a done callback)."""
        topics, body, code_of = _add_partitions_request(transactional_id, producer_id, producer_epoch, partitions)
        if not topics:
            on_done({})
            return

        def answered(f: Any) -> None:
            try:
                out = _add_partitions_result(topics, f.result())
            except Exception as exc:  # noqa: BLE001 - on_done must hear of every outcome
                code = exc.error_code if isinstance(exc, PylogError) else -1
                out = {(t, p): code for t, ps in topics.items() for p in ps}
            on_done(out)

        self._groups.coordinator_call(transactional_id, ApiKey.ADD_PARTITIONS_TO_TXN, body, coordinator_code=code_of,
                                      key_type=CoordinatorType.TRANSACTION,
                                      version=_ADD_PARTITIONS_CLIENT_VERSION).add_done_callback(answered)

    def add_offsets_to_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                           group_id: str) -> int:
        body = m.AddOffsetsToTxnRequest(transactional_id=transactional_id, producer_id=producer_id,
                                        producer_epoch=producer_epoch, group_id=group_id)
        try:
            return self._call(transactional_id, CoordinatorType.TRANSACTION, ApiKey.ADD_OFFSETS_TO_TXN, body,
                              lambda r: r.error_code).error_code
        except PylogError as exc:
            return exc.error_code

    def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> int:
        body = m.EndTxnRequest(transactional_id=transactional_id, producer_id=producer_id,
                               producer_epoch=producer_epoch, committed=bool(commit))
        try:
            return self._call(transactional_id, CoordinatorType.TRANSACTION, ApiKey.END_TXN, body,
                              lambda r: r.error_code).error_code
        except PylogError as exc:
            return exc.error_code

    def txn_offset_commit(self, transactional_id: str, group_id: str, producer_id: int, producer_epoch: int,
                          offsets: Mapping[str, Mapping[int, Any]], *, member_id: str | None = None,
                          generation_id: int = -1,
                          group_instance_id: str | None = None) -> dict[str, dict[int, int]]:
        """TxnOffsetCommit to the group's coordinator (v3+ carries the member's
        generation, id and instance id, KIP-447).  Raises InvalidRequestError for
        malformed offsets, as the embedded broker does."""
        request, out = _commit_request(offsets)
        if not request:
            return out
        R = m.TxnOffsetCommitRequest

        def body(version: int) -> Any:
            req = R(transactional_id=transactional_id, group_id=group_id, producer_id=producer_id,
                    producer_epoch=producer_epoch, topics=[R.TxnOffsetCommitRequestTopic(name=t, partitions=[
                        R.TxnOffsetCommitRequestPartition(
                            partition_index=p, committed_offset=c.offset,
                            committed_leader_epoch=c.leader_epoch if version >= 2 else -1,
                            committed_metadata=c.metadata) for p, c in parts.items()])
                        for t, parts in request.items()])
            if version >= 3:
                req.generation_id = generation_id
                req.member_id = member_id or ""
                req.group_instance_id = group_instance_id
            return req

        def code_of(resp: Any) -> int:
            return _first_error(p.error_code for t in resp.topics for p in t.partitions)

        try:
            resp = self._call(group_id, CoordinatorType.GROUP, ApiKey.TXN_OFFSET_COMMIT, body, code_of)
        except PylogError as exc:
            for t, parts in request.items():
                out.setdefault(t, {}).update({p: exc.error_code for p in parts})
            return out
        for t in resp.topics:
            dest = out.setdefault(t.name, {})
            for p in t.partitions:
                dest[p.partition_index] = p.error_code
        return out
