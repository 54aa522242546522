"""Consumer declarations, retry timing and error descriptions: the parts without I/O.

Behaviour against real buses and databases is in tests/integration/runtime/test_consumers.py.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta

import pytest
from google.protobuf import wrappers_pb2
from sqlalchemy.exc import IntegrityError

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.consumers import (
    Consumer,
    RetryPolicy,
    RunnerOptions,
    default_consumer_name,
    describe_error,
)
from gatehouse.runtime.db import SqlAlchemyUnitOfWork


def _unit_of_work() -> SqlAlchemyUnitOfWork:
    raise AssertionError("not used by these tests")


async def _ignore(_event: Event, _payload: wrappers_pb2.StringValue, _uow: object) -> None:
    return None


def test_streams_follow_from_the_declared_types_in_order() -> None:
    consumer = Consumer("notifications", _unit_of_work)
    consumer.add_handler("payment.processed", wrappers_pb2.StringValue, _ignore)
    consumer.add_handler("user.registered", wrappers_pb2.StringValue, _ignore)
    consumer.add_handler("payment.failed", wrappers_pb2.StringValue, _ignore)
    assert consumer.streams == ("events.payment", "events.user")
    assert consumer.event_types == ("payment.processed", "user.registered", "payment.failed")
    route = consumer.route("payment.failed")
    assert route is not None
    assert route.payload_type is wrappers_pb2.StringValue
    assert route.schema_version == 1
    assert consumer.route("payment.refunded") is None


def test_the_decorator_registers_and_returns_the_handler() -> None:
    consumer = Consumer("monitoring", _unit_of_work)

    @consumer.handles("door.opened", wrappers_pb2.StringValue, schema_version=3)
    async def on_door(event: Event, payload: wrappers_pb2.StringValue, uow: object) -> None:
        return None

    route = consumer.route("door.opened")
    assert route is not None
    assert route.handler is on_door
    assert route.schema_version == 3


@pytest.mark.parametrize("name", ["", "Notifications", "notifications.v1", "1st", "a b"])
def test_consumer_names_that_cannot_be_group_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="consumer name"):
        Consumer(name, _unit_of_work)


def test_bad_declarations_are_refused() -> None:
    consumer = Consumer("notifications", _unit_of_work)
    consumer.add_handler("payment.processed", wrappers_pb2.StringValue, _ignore)
    with pytest.raises(ValueError, match="already has a handler"):
        consumer.add_handler("payment.processed", wrappers_pb2.StringValue, _ignore)
    with pytest.raises(ValueError, match="event type"):
        consumer.add_handler("payment", wrappers_pb2.StringValue, _ignore)
    with pytest.raises(ValueError, match="schema_version"):
        consumer.add_handler("payment.failed", wrappers_pb2.StringValue, _ignore, schema_version=0)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(
        first_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(seconds=1),
        multiplier=2.0,
    )
    rng = random.Random(7)
    for failed, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (30, 1.0)]:
        delays = [policy.backoff(failed, rng).total_seconds() for _ in range(200)]
        assert all(base * 0.5 <= delay <= base for delay in delays)
        # Jittered: replicas failing together do not retry in lockstep.
        assert len(set(delays)) > 100


def test_retry_policy_and_runner_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(first_backoff=timedelta(seconds=2), max_backoff=timedelta(seconds=1))
    with pytest.raises(ValueError, match="batch_size"):
        RunnerOptions(batch_size=0)
    with pytest.raises(ValueError, match="claim_min_idle"):
        RunnerOptions(claim_min_idle=timedelta(0))


def test_error_descriptions_carry_no_sql_and_stay_short() -> None:
    sql_error = IntegrityError(
        "INSERT INTO users (email, password) VALUES (?, ?)",
        ("alice@example.com", "hunter2"),
        ValueError("UNIQUE constraint failed: users.email"),
    )
    described = describe_error(sql_error)
    assert described == "IntegrityError (ValueError)"
    assert "hunter2" not in described
    assert describe_error(RuntimeError("first line\nsecond line")) == "RuntimeError: first line"
    assert describe_error(KeyError()) == "KeyError"
    long = describe_error(ValueError("x" * 1000), limit=50)
    assert len(long) == 50
    assert long.startswith("ValueError: xxx")


def test_consumer_names_are_unique_per_runner() -> None:
    names = {default_consumer_name() for _ in range(50)}
    assert len(names) == 50
    assert all(f"-{os.getpid()}-" in name for name in names)
    assert not any("." in name for name in names)
