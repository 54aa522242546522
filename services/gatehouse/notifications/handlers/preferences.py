"""SetPreferences and GetPreferences: a user's own consent, addresses and quiet hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from gatehouse.notifications.adapters import codec
from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.preferences import (
    WRITABLE_FIELDS,
    ChannelPreference,
    Preferences,
    PreferencesPatch,
    QuietHours,
    QuietHoursError,
    apply_patch,
    same_settings,
)
from gatehouse.notifications.domain.templates import check_locale
from gatehouse.notifications.handlers.common import (
    ETAG_MISMATCH,
    PERMISSION_MISSING,
    READ_ALL,
    NotificationsDeps,
    Principal,
    replayed,
    reply_key,
)
from gatehouse.notifications.handlers.ports import (
    DirectoryUnavailableError,
    NotificationsUnitOfWork,
    StaleVersionError,
)
from gatehouse.notifications.handlers.send import AddressInput, literal_address
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    Aborted,
    AccessRefused,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    permission_missing,
)

INVALID_UPDATE_MASK = "INVALID_UPDATE_MASK"
DUPLICATE_CHANNEL = "DUPLICATE_CHANNEL"
INVALID_LOCALE = "INVALID_LOCALE"
USER_NOT_FOUND = "USER_NOT_FOUND"
_SUFFIX = "/notificationPreferences"


@dataclass(frozen=True, slots=True)
class ChannelPreferenceInput:
    channel: Channel | None
    opted_out: bool
    address: AddressInput | None


@dataclass(frozen=True, slots=True)
class TimeInput:
    hours: int
    minutes: int
    seconds: int
    nanos: int


@dataclass(frozen=True, slots=True)
class QuietHoursInput:
    start: TimeInput | None
    end: TimeInput | None
    time_zone: str


@dataclass(frozen=True, slots=True)
class SetPreferences:
    name: str
    channels: tuple[ChannelPreferenceInput, ...]
    quiet_hours: QuietHoursInput | None
    marketing_opt_in: bool
    preferred_locale: str
    fields: tuple[str, ...]
    etag: str
    request_id: str
    fingerprint: bytes


def owner_of(name: str, principal: Principal) -> str:
    """`users/{user}` of a preferences name; `users/me/...` names the caller."""
    user = name.removesuffix(_SUFFIX)
    if user == "users/me":
        if not principal.user:
            raise PermissionDenied(
                "users/me names an end user; a service must name the user",
                reason=PERMISSION_MISSING,
            )
        return principal.user
    return user


def _time(value: TimeInput | None, field_name: str) -> time:
    if value is None:
        raise QuietHoursError("INVALID_QUIET_HOURS", f"{field_name} is required")
    try:
        return time(value.hours, value.minutes, value.seconds, value.nanos // 1000)
    except ValueError:
        raise QuietHoursError("INVALID_QUIET_HOURS", f"{field_name} is out of range") from None


def _quiet_hours(value: QuietHoursInput) -> QuietHours:
    try:
        return QuietHours(
            _time(value.start, "start_time"), _time(value.end, "end_time"), value.time_zone
        )
    except QuietHoursError as error:
        raise InvalidArgument(
            [FieldViolation("preferences.quiet_hours", error.description)], reason=error.reason
        ) from None


def _channels(
    entries: tuple[ChannelPreferenceInput, ...], deps: NotificationsDeps
) -> tuple[ChannelPreference, ...]:
    seen: set[Channel] = set()
    result: list[ChannelPreference] = []
    for index, entry in enumerate(entries):
        path = f"preferences.channels[{index}]"
        if entry.channel is None:
            raise InvalidArgument([FieldViolation(f"{path}.channel", "is required")])
        if entry.channel in seen:
            raise InvalidArgument(
                [FieldViolation(f"{path}.channel", f"{entry.channel.value} appears twice")],
                reason=DUPLICATE_CHANNEL,
            )
        seen.add(entry.channel)
        address = (
            None
            if entry.address is None
            else literal_address(entry.address, entry.channel, deps, f"{path}.address")
        )
        result.append(ChannelPreference(entry.channel, entry.opted_out, address))
    return tuple(result)


def _fields(fields: tuple[str, ...]) -> frozenset[str]:
    if not fields or "*" in fields:
        return frozenset()
    unknown = sorted(set(fields) - WRITABLE_FIELDS)
    if unknown:
        raise InvalidArgument(
            [FieldViolation("update_mask", f"unknown or read-only fields: {', '.join(unknown)}")],
            reason=INVALID_UPDATE_MASK,
        )
    return frozenset(fields)


def _decode(body: bytes) -> Preferences:
    return codec.preferences_from(codec.loads(body))


async def set_preferences(
    command: SetPreferences,
    principal: Principal,
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
) -> Preferences:
    user = owner_of(command.name, principal)
    if user != principal.user:
        raise AccessRefused(
            "only the user may set their own notification preferences",
            reason=PERMISSION_MISSING,
            metadata={"permission": "self"},
        )
    names = _fields(command.fields)
    if command.preferred_locale and not check_locale(command.preferred_locale):
        raise InvalidArgument(
            [FieldViolation("preferences.preferred_locale", "must be a BCP 47 locale")],
            reason=INVALID_LOCALE,
        )
    patch = PreferencesPatch(
        channels=_channels(command.channels, deps),
        quiet_hours=None if command.quiet_hours is None else _quiet_hours(command.quiet_hours),
        marketing_opt_in=command.marketing_opt_in,
        preferred_locale=command.preferred_locale,
        fields=names,
    )
    key = reply_key("SetPreferences", principal, command.request_id, command.fingerprint)
    for _ in range(5):
        now = deps.clock()
        async with uow as tx:
            first = await replayed(tx, key, now)
            if first is not None:
                return _decode(first)
            current = await tx.preferences.get(user) or Preferences(user)
            if command.etag and command.etag != current.etag:
                raise Aborted(
                    f"{current.name} changed since the etag given; read them again",
                    reason=ETAG_MISMATCH,
                )
            updated = apply_patch(current, patch, now)
            if current.version and same_settings(updated, current):
                return current
            try:
                await tx.preferences.save(updated, expected_version=current.version)
                await tx.replies.add(
                    key.scope,
                    key.request_id,
                    key.fingerprint,
                    codec.dumps(codec.preferences_doc(updated)).encode(),
                    now=now,
                    ttl=deps.idempotency_ttl,
                )
                await tx.commit()
            except (StaleVersionError, DuplicateKeyError):
                await tx.rollback()
                continue
        return updated
    raise Unavailable("the preferences are being changed concurrently; retry")


async def get_preferences(
    name: str,
    principal: Principal,
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
) -> Preferences:
    user = owner_of(name, principal)
    own = user == principal.user
    if not own and not principal.has(READ_ALL):
        raise permission_missing(READ_ALL)
    async with uow as tx:
        stored = await tx.preferences.get(user)
    if stored is not None or own:
        return stored or Preferences(user)
    try:
        known = await deps.directory.user(user)
    except DirectoryUnavailableError:
        raise Unavailable("auth cannot be reached to look the user up") from None
    if known is None:
        raise NotFound(user, reason=USER_NOT_FOUND)
    return Preferences(user)
