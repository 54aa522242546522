"""CreateTemplate, UpdateTemplate, GetTemplate, ListTemplates, and the seeded defaults."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gatehouse.notifications.adapters import codec
from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.templates import (
    Template,
    TemplateContent,
    validate_content,
    validate_template_id,
)
from gatehouse.notifications.handlers.common import (
    ETAG_MISMATCH,
    MANAGE_TEMPLATES,
    SEND,
    NotificationsDeps,
    Principal,
    replayed,
    reply_key,
)
from gatehouse.notifications.handlers.ports import NotificationsUnitOfWork
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    permission_missing,
)

TEMPLATE_ALREADY_EXISTS = "TEMPLATE_ALREADY_EXISTS"
TEMPLATE_NOT_FOUND = "TEMPLATE_NOT_FOUND"
TEMPLATE_VERSION_NOT_FOUND = "TEMPLATE_VERSION_NOT_FOUND"
INVALID_UPDATE_MASK = "INVALID_UPDATE_MASK"
IMMUTABLE_FIELD = "IMMUTABLE_FIELD"
INVALID_VERSION = "INVALID_VERSION"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"  # noqa: S105 - an error reason, not a secret
UPDATABLE = frozenset(
    {"display_name", "description", "default_locale", "localizations", "variables"}
)


@dataclass(frozen=True, slots=True)
class CreateTemplate:
    template_id: str
    content: TemplateContent
    request_id: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class UpdateTemplate:
    template_id: str
    content: TemplateContent
    fields: tuple[str, ...]
    etag: str
    request_id: str
    fingerprint: bytes
    channel_given: bool = False


def _can_read(principal: Principal) -> None:
    if not (principal.has(SEND) or principal.has(MANAGE_TEMPLATES)):
        raise permission_missing(SEND)


def _decode(body: bytes) -> Template:
    return codec.template_from(codec.loads(body))


def _encode(template: Template) -> bytes:
    return codec.dumps(codec.template_doc(template)).encode()


async def create_template(
    command: CreateTemplate,
    principal: Principal,
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
) -> Template:
    validate_template_id(command.template_id)
    validate_content(command.content)
    key = reply_key("CreateTemplate", principal, command.request_id, command.fingerprint)
    now = deps.clock()
    template = Template(
        template_id=command.template_id,
        content=command.content,
        version=1,
        create_time=now,
        update_time=now,
        version_author=principal.actor(),
    )
    for _ in range(3):
        async with uow as tx:
            try:
                # The claim comes first: a twin's insert waits for this transaction, then
                # fails, and replays what this one stored.
                await tx.replies.add(
                    key.scope,
                    key.request_id,
                    key.fingerprint,
                    _encode(template),
                    now=now,
                    ttl=deps.idempotency_ttl,
                )
            except DuplicateKeyError:
                await tx.rollback()
            else:
                try:
                    if await tx.templates.exists(command.template_id):
                        raise DuplicateKeyError("pk_notifications_templates")
                    await tx.templates.add(template)
                except DuplicateKeyError:
                    raise AlreadyExists(
                        f"{template.name} already exists", reason=TEMPLATE_ALREADY_EXISTS
                    ) from None
                await tx.commit()
                await deps.cache.invalidate(command.template_id)
                return template
        async with uow as again:
            body = await replayed(again, key, deps.clock())
        if body is not None:
            return _decode(body)
    raise Unavailable("the template could not be stored; retry with the same request_id")


def _check_mask(fields: Sequence[str], channel_given: bool) -> frozenset[str]:
    if not fields:
        raise InvalidArgument(
            [FieldViolation("update_mask", "is required, e.g. 'localizations,variables'")],
            reason=INVALID_UPDATE_MASK,
        )
    if "*" in fields:
        return UPDATABLE
    unknown = [f for f in fields if f not in UPDATABLE and f != "channel"]
    if unknown:
        raise InvalidArgument(
            [FieldViolation("update_mask", f"unknown or read-only fields: {', '.join(unknown)}")],
            reason=INVALID_UPDATE_MASK,
        )
    if "channel" in fields:
        raise InvalidArgument(
            [FieldViolation("update_mask", "channel cannot change")], reason=IMMUTABLE_FIELD
        )
    return frozenset(fields)


async def update_template(
    command: UpdateTemplate,
    principal: Principal,
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
) -> Template:
    names = _check_mask(command.fields, command.channel_given)
    key = reply_key("UpdateTemplate", principal, command.request_id, command.fingerprint)
    for _ in range(5):
        now = deps.clock()
        async with uow as tx:
            first = await replayed(tx, key, now)
            if first is not None:
                return _decode(first)
            latest = await tx.templates.get(command.template_id)
            if latest is None:
                raise NotFound(f"templates/{command.template_id}", reason=TEMPLATE_NOT_FOUND)
            if command.etag and command.etag != latest.etag:
                raise Aborted(
                    f"{latest.name} has changed since the etag given; read it again",
                    reason=ETAG_MISMATCH,
                )
            if (
                command.channel_given
                and "*" in command.fields
                and command.content.channel is not latest.channel
            ):
                raise InvalidArgument(
                    [FieldViolation("template.channel", "cannot change")], reason=IMMUTABLE_FIELD
                )
            content = replace(
                latest.content,
                **{name: getattr(command.content, name) for name in names},
            )
            validate_content(content)
            if content == latest.content:
                return latest
            updated = Template(
                template_id=latest.template_id,
                content=content,
                version=latest.version + 1,
                create_time=latest.create_time,
                update_time=now,
                version_author=principal.actor(),
            )
            try:
                await tx.templates.add(updated)
                await tx.replies.add(
                    key.scope,
                    key.request_id,
                    key.fingerprint,
                    _encode(updated),
                    now=now,
                    ttl=deps.idempotency_ttl,
                )
                await tx.commit()
            except DuplicateKeyError:
                # Another update took this version number (or our twin stored the reply):
                # read again and either replay or build on the newer version.
                await tx.rollback()
                continue
        await deps.cache.invalidate(command.template_id)
        return updated
    raise Unavailable("the template is being updated concurrently; retry")


async def get_template(
    template_id: str,
    version: int,
    principal: Principal,
    uow: NotificationsUnitOfWork,
) -> Template:
    _can_read(principal)
    if version < 0:
        raise InvalidArgument(
            [FieldViolation("version", "must not be negative")], reason=INVALID_VERSION
        )
    async with uow as tx:
        template = await tx.templates.get(template_id, version)
        if template is None:
            if version and await tx.templates.exists(template_id):
                raise NotFound(
                    f"templates/{template_id} version {version}",
                    reason=TEMPLATE_VERSION_NOT_FOUND,
                )
            raise NotFound(f"templates/{template_id}", reason=TEMPLATE_NOT_FOUND)
    return template


@dataclass(frozen=True, slots=True)
class TemplatePage:
    templates: list[Template]
    next_page_token: str


def _token(channel: Channel | None, last: str) -> str:
    raw = f"{channel.value if channel else ''}|{last}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str, channel: Channel | None) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    wanted, sep, last = raw.partition("|")
    if not sep or not last or wanted != (channel.value if channel else ""):
        raise InvalidArgument(
            [FieldViolation("page_token", "is malformed or was issued for another query")],
            reason=INVALID_PAGE_TOKEN,
        )
    return last


async def list_templates(
    page_size: int,
    page_token: str,
    channel: Channel | None,
    principal: Principal,
    uow: NotificationsUnitOfWork,
) -> TemplatePage:
    _can_read(principal)
    after = _read_token(page_token, channel) if page_token else ""
    size = 50 if page_size == 0 else min(page_size, 500)
    async with uow as tx:
        found = await tx.templates.page(channel, after, size + 1)
    more = len(found) > size
    found = found[:size]
    return TemplatePage(found, _token(channel, found[-1].template_id) if more and found else "")


async def seed_templates(
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
    defaults: Sequence[tuple[str, TemplateContent]],
) -> int:
    """Create the default templates that do not exist yet (operators' versions are kept)."""
    created = 0
    for template_id, content in defaults:
        now = deps.clock()
        async with uow as tx:
            if await tx.templates.exists(template_id):
                continue
            try:
                await tx.templates.add(
                    Template(
                        template_id=template_id,
                        content=content,
                        version=1,
                        create_time=now,
                        update_time=now,
                    )
                )
                await tx.commit()
            except DuplicateKeyError:
                # Another replica seeded it at the same moment.
                await tx.rollback()
                continue
        created += 1
    return created
