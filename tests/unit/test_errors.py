"""The error hierarchy covers Kafka's whole table of error codes (4.x: -1 and 1..128).

A client that meets a code answers as Kafka's clients do only if the code maps to its
name and retriable flag: LEADER_NOT_AVAILABLE during an election must be retried,
not raised as UNKNOWN_SERVER_ERROR (what CI caught in a leader-kill test).
"""

from __future__ import annotations

import pytest

from pylog import errors
from pylog.errors import KafkaError, LeaderNotAvailableError, PylogError, UnknownServerError, error_code_for, \
    error_for_code

#: Kafka's codes its clients retry (their exceptions extend RetriableException).
KAFKA_RETRIABLE = {2, 3, 5, 6, 7, 9, 13, 14, 15, 16, 19, 20, 41, 51, 56, 70, 71, 72, 74, 75, 78, 80,
                   83, 84, 88, 89, 100, 103, 106, 122, 123}


@pytest.mark.parametrize("code", [-1, *range(1, 129)])
def test_every_kafka_code_maps_to_its_name_and_retriable_flag(code):
    exc = error_for_code(code)
    assert isinstance(exc, PylogError)
    assert exc.error_code == code and error_code_for(exc) == code
    assert exc.kafka_name.isupper() and not exc.kafka_name.startswith("UNKNOWN_ERROR_CODE")
    assert exc.retriable == (code in KAFKA_RETRIABLE), exc.kafka_name


def test_leader_not_available_is_its_own_retriable_class():
    exc = error_for_code(5, "topic 't': metadata error 5")
    assert type(exc) is LeaderNotAvailableError and exc.retriable
    assert str(exc) == "topic 't': metadata error 5"


def test_a_code_kafka_does_not_define_is_unknown_server_error_naming_its_number():
    exc = error_for_code(999)
    assert type(exc) is UnknownServerError and not exc.retriable and "999" in str(exc)


def test_each_code_has_one_canonical_class():
    by_name = {}
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, PylogError) and cls is not KafkaError:
            by_name.setdefault(cls.kafka_name, set()).add(cls.error_code)
    assert all(len(codes) == 1 for codes in by_name.values()), by_name
