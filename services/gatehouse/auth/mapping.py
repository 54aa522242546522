"""Domain objects <-> the contract's messages (responses and event payloads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from gatehouse.auth.domain.roles import Role, role_name
from gatehouse.auth.domain.security_events import (
    Outcome,
    SecurityEvent,
    SecurityEventType,
    Severity,
)
from gatehouse.auth.domain.sessions import SecondFactor
from gatehouse.auth.domain.tokens import InactiveReason
from gatehouse.auth.domain.users import User, UserState
from gatehouse.auth.v1 import auth_pb2
from gatehouse.common.v1 import common_pb2

_USER_STATES: dict[int, str] = {int(number): name for name, number in auth_pb2.UserState.items()}
_EVENT_TYPES: dict[int, str] = {
    int(number): name for name, number in auth_pb2.SecurityEventType.items()
}
_OUTCOMES: dict[int, str] = {
    int(number): name for name, number in auth_pb2.SecurityEventOutcome.items()
}
_SEVERITIES: dict[int, str] = {int(number): name for name, number in common_pb2.Severity.items()}


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def maybe_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    return None if value is None else timestamp(value)


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def duration(value: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def user_state(state: UserState) -> auth_pb2.UserState.ValueType:
    return auth_pb2.UserState.Value(f"USER_STATE_{state.name}")


class UnknownEnumValueError(ValueError):
    """A client sent an enum number this contract version does not define."""


def _enum_name(names: dict[int, str], value: int, prefix: str) -> str:
    name = names.get(value)
    if name is None:
        raise UnknownEnumValueError(f"unknown value {value}")
    return name.removeprefix(prefix)


def user_state_from_proto(value: int) -> UserState | None:
    name = _enum_name(_USER_STATES, value, "USER_STATE_")
    return None if name == "UNSPECIFIED" else UserState[name]


def user_to_proto(user: User, now: datetime) -> auth_pb2.User:
    return auth_pb2.User(
        name=user.name,
        email=user.email or "",
        display_name=user.display_name,
        roles=[role_name(role_id) for role_id in sorted(user.roles)],
        totp_enabled=user.totp.enabled,
        state=user_state(user.state_at(now)),
        lock_expire_time=maybe_timestamp(user.lock_at(now)),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
        delete_time=maybe_timestamp(user.deleted_at),
        last_login_time=maybe_timestamp(user.last_login_at),
        password_update_time=maybe_timestamp(user.password_updated_at),
    )


def role_to_proto(role: Role) -> auth_pb2.Role:
    return auth_pb2.Role(
        name=role.name,
        display_name=role.display_name,
        description=role.description,
        permissions=list(role.permissions),
        built_in=role.built_in,
        create_time=timestamp(role.created_at),
        update_time=timestamp(role.updated_at),
    )


def event_type(kind: SecurityEventType) -> auth_pb2.SecurityEventType.ValueType:
    return auth_pb2.SecurityEventType.Value(f"SECURITY_EVENT_TYPE_{kind.name}")


def event_type_from_proto(value: int) -> SecurityEventType | None:
    name = _enum_name(_EVENT_TYPES, value, "SECURITY_EVENT_TYPE_")
    return None if name == "UNSPECIFIED" else SecurityEventType[name]


def outcome(value: Outcome) -> auth_pb2.SecurityEventOutcome.ValueType:
    return auth_pb2.SecurityEventOutcome.Value(f"SECURITY_EVENT_OUTCOME_{value.name}")


def outcome_from_proto(value: int) -> Outcome | None:
    name = _enum_name(_OUTCOMES, value, "SECURITY_EVENT_OUTCOME_")
    return None if name == "UNSPECIFIED" else Outcome[name]


def severity(value: Severity) -> common_pb2.Severity.ValueType:
    return common_pb2.Severity.Value(f"SEVERITY_{value.name}")


def severity_from_proto(value: int) -> Severity | None:
    name = _enum_name(_SEVERITIES, value, "SEVERITY_")
    return None if name == "UNSPECIFIED" else Severity[name]


def security_event_to_proto(event: SecurityEvent) -> auth_pb2.SecurityEvent:
    return auth_pb2.SecurityEvent(
        name=event.name,
        type=event_type(event.type),
        severity=severity(event.severity),
        outcome=outcome(event.outcome),
        actor=common_pb2.Actor(
            user=event.actor.user,
            service=event.actor.service,
            client_address=event.actor.client_address,
        ),
        subject=event.subject,
        time=timestamp(event.time),
        reason=event.reason,
        user_agent=event.user_agent,
        correlation_id=event.correlation_id,
        details=dict(event.details),
    )


def second_factor(value: SecondFactor) -> auth_pb2.SecondFactorType.ValueType:
    if value is SecondFactor.NONE:
        return auth_pb2.SECOND_FACTOR_TYPE_UNSPECIFIED
    return auth_pb2.SecondFactorType.Value(f"SECOND_FACTOR_TYPE_{value.name}")


def inactive_reason(reason: InactiveReason) -> auth_pb2.TokenInactiveReason.ValueType:
    return auth_pb2.TokenInactiveReason.Value(f"TOKEN_INACTIVE_REASON_{reason.name}")
