"""SendNotification: resolve the recipients, render, and queue one notification each.

The message is rendered when the request is accepted (template errors are the caller's to
see); opt-outs and missing addresses are decided now too. Quiet hours and the rate limit are
the delivery worker's, applied when a notification falls due. Everything one call creates
commits in one transaction with its idempotency record, so a retry replays it and a refused
call wrote nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gatehouse.notifications.adapters import codec
from gatehouse.notifications.adapters.repositories import address_hash
from gatehouse.notifications.domain.addresses import (
    CHANNEL_ADDRESS,
    Address,
    AddressError,
    AddressKind,
    Channel,
    check_fits,
    make_address,
)
from gatehouse.notifications.domain.notifications import (
    Category,
    Delivery,
    HoldReason,
    Notification,
    Priority,
    RecipientSpec,
    Status,
    SuppressionReason,
    TemplateUse,
    suppression_for,
)
from gatehouse.notifications.domain.preferences import Preferences
from gatehouse.notifications.domain.templates import (
    Localization,
    RenderedMessage,
    RenderError,
    Template,
    check_inline,
    check_locale,
    redact_values,
    render,
    resolve_values,
)
from gatehouse.notifications.handlers.common import (
    ROLE_NAME,
    USER_NAME,
    NotificationsDeps,
    Principal,
    ReplyKey,
    check_name,
    record_change,
    replayed,
    reply_key,
)
from gatehouse.notifications.handlers.ports import (
    DirectoryUnavailableError,
    NotificationsUnitOfWork,
    UserInfo,
    UserState,
)
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

RECIPIENT_REQUIRED = "RECIPIENT_REQUIRED"
RECIPIENT_NOT_FOUND = "RECIPIENT_NOT_FOUND"
RECIPIENT_OPTED_OUT = "RECIPIENT_OPTED_OUT"
RECIPIENT_NO_ADDRESS = "RECIPIENT_NO_ADDRESS"
RECIPIENT_INACTIVE = "RECIPIENT_INACTIVE"
FANOUT_TOO_LARGE = "FANOUT_TOO_LARGE"
CHANNEL_REQUIRED = "CHANNEL_REQUIRED"
CONTENT_REQUIRED = "CONTENT_REQUIRED"
TEMPLATE_NOT_FOUND = "TEMPLATE_NOT_FOUND"
TEMPLATE_VERSION_NOT_FOUND = "TEMPLATE_VERSION_NOT_FOUND"
TEMPLATE_CHANNEL_MISMATCH = "TEMPLATE_CHANNEL_MISMATCH"
SCHEDULE_TIME_TOO_FAR = "SCHEDULE_TIME_TOO_FAR"
RATE_LIMITED = "RATE_LIMITED"
AUTH_UNAVAILABLE = "AUTH_UNAVAILABLE"
INVALID_LOCALE = "INVALID_LOCALE"
MAX_RELATED_RESOURCE = 512


@dataclass(frozen=True, slots=True)
class InlineInput:
    subject: str = ""
    text_body: str = ""
    html_body: str = ""


@dataclass(frozen=True, slots=True)
class TemplateInput:
    name: str
    version: int = 0
    locale: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AddressInput:
    kind: AddressKind | None
    value: str


@dataclass(frozen=True, slots=True)
class SendNotification:
    request_id: str
    fingerprint: bytes
    channel: Channel | None
    user: str = ""
    role: str = ""
    address: AddressInput | None = None
    template: TemplateInput | None = None
    inline: InlineInput | None = None
    priority: Priority = Priority.NORMAL
    category: Category = Category.TRANSACTIONAL
    schedule_time: datetime | None = None
    related_resource: str = ""
    # Event-driven messages know the user already (the event carries the email address):
    # no need to ask auth.
    known_user: UserInfo | None = None


@dataclass(frozen=True, slots=True)
class _Target:
    user: UserInfo | None  # None: a literal address
    address: Address | None


# --- checks before anything is read ----------------------------------------------------------


def _check_request(command: SendNotification, deps: NotificationsDeps, now: datetime) -> None:
    targets = sum(bool(x) for x in (command.user, command.role, command.address))
    if targets != 1:
        raise InvalidArgument(
            [FieldViolation("recipient", "exactly one of user, address or role is required")],
            reason=RECIPIENT_REQUIRED,
        )
    if command.channel is None:
        raise InvalidArgument([FieldViolation("channel", "is required")], reason=CHANNEL_REQUIRED)
    if (command.template is None) == (command.inline is None):
        raise InvalidArgument(
            [FieldViolation("content", "exactly one of template or inline_content is required")],
            reason=CONTENT_REQUIRED,
        )
    if command.user:
        check_name(command.user, USER_NAME, "recipient.user", "users/{user}")
    if command.role:
        check_name(command.role, ROLE_NAME, "recipient.role", "roles/{role}")
    if command.inline is not None:
        inline = command.inline
        check_inline(command.channel, inline.subject, inline.text_body, inline.html_body)
    if command.template is not None:
        check_name(command.template.name, _TEMPLATE_NAME, "template.name", "templates/{template}")
        if command.template.locale and not check_locale(command.template.locale):
            raise InvalidArgument(
                [FieldViolation("template.locale", "must be a BCP 47 locale such as es-AR")],
                reason=INVALID_LOCALE,
            )
        if command.template.version < 0:
            raise InvalidArgument(
                [FieldViolation("template.version", "must not be negative")],
            )
    if command.schedule_time is not None and command.schedule_time > now + deps.max_schedule_ahead:
        raise InvalidArgument(
            [FieldViolation("schedule_time", "must be at most 30 days ahead")],
            reason=SCHEDULE_TIME_TOO_FAR,
        )
    if len(command.related_resource) > MAX_RELATED_RESOURCE:
        raise InvalidArgument(
            [FieldViolation("related_resource", f"at most {MAX_RELATED_RESOURCE} characters")]
        )


def literal_address(
    value: AddressInput, channel: Channel, deps: NotificationsDeps, field_name: str
) -> Address:
    kind = value.kind or CHANNEL_ADDRESS[channel]
    try:
        address = make_address(kind, value.value, deps.address_rules)
        check_fits(address, channel)
    except AddressError as error:
        raise InvalidArgument(
            [FieldViolation(f"{field_name}.{kind.value}", error.description)],
            reason=error.reason,
        ) from None
    return address


# --- templates --------------------------------------------------------------------------------

_TEMPLATE_NAME = re.compile(r"templates/[a-z][a-z0-9-]{0,62}")


async def load_template(
    tx: NotificationsUnitOfWork, deps: NotificationsDeps, name: str, version: int
) -> Template:
    template_id = name.removeprefix("templates/")
    template: Template | None = None
    if version == 0:
        template = await deps.cache.latest(template_id)
    if template is None:
        template = await tx.templates.get(template_id, version)
        if template is not None and version == 0:
            await deps.cache.remember(template)
    if template is None:
        if version and await tx.templates.exists(template_id):
            raise NotFound(f"{name} version {version}", reason=TEMPLATE_VERSION_NOT_FOUND)
        raise NotFound(name, reason=TEMPLATE_NOT_FOUND)
    return template


# --- recipients -------------------------------------------------------------------------------


async def resolve_targets(command: SendNotification, deps: NotificationsDeps) -> list[_Target]:
    """Who the message goes to; asks auth for users and roles (outside any transaction)."""
    assert command.channel is not None
    if command.address is not None:
        return [
            _Target(
                None, literal_address(command.address, command.channel, deps, "recipient.address")
            )
        ]
    try:
        if command.user:
            user = command.known_user or await deps.directory.user(command.user)
            if user is None:
                raise NotFound(command.user, reason=RECIPIENT_NOT_FOUND)
            return [_Target(user, None)]
        members = await deps.directory.role_members(command.role, deps.max_fanout)
    except DirectoryUnavailableError:
        raise Unavailable(
            "auth cannot be reached to resolve the recipient; retry with the same request_id",
            reason=AUTH_UNAVAILABLE,
        ) from None
    if members is None:
        raise NotFound(command.role, reason=RECIPIENT_NOT_FOUND)
    if len(members) > deps.max_fanout:
        raise FailedPrecondition(
            f"{command.role} has more than {deps.max_fanout} members",
            reason=FANOUT_TOO_LARGE,
        )
    return [_Target(member, None) for member in members]


def _user_address(
    user: UserInfo, preferences: Preferences | None, channel: Channel, deps: NotificationsDeps
) -> Address | None:
    if preferences is not None:
        own = preferences.for_channel(channel).address
        if own is not None:
            return own
    if channel is Channel.EMAIL and user.email:
        try:
            return make_address(AddressKind.EMAIL, user.email, deps.address_rules)
        except AddressError:
            return None
    return None


# --- the use case -----------------------------------------------------------------------------


async def send_notification(
    command: SendNotification,
    principal: Principal,
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
) -> list[Notification]:
    now = deps.clock()
    _check_request(command, deps, now)
    key = reply_key("SendNotification", principal, command.request_id, command.fingerprint)
    wait = await deps.send_quota.take(principal.identity)
    if wait is not None:
        raise ResourceExhausted(
            "your SendNotification quota is used up; retry later",
            reason=RATE_LIMITED,
            retry_after=wait,
        )
    if command.user or command.role:
        # A retry is answered before auth is asked again (the recipient may have changed).
        async with uow as tx:
            first = await replayed(tx, key, now)
        if first is not None:
            return _decode(first)
    # For a literal address the claim in `send_in` finds a retry: no extra transaction.
    targets = await resolve_targets(command, deps)
    for _ in range(3):
        created: list[Notification] | None = None
        async with uow as tx:
            try:
                created = await send_in(tx, command, principal, deps, targets, key)
                await tx.commit()
            except DuplicateKeyError:
                # A concurrent twin with this request id committed first: replay it below.
                await tx.rollback()
        if created is not None:
            deps.wake()
            return created
        async with uow as again:
            body = await replayed(again, key, deps.clock())
        if body is not None:
            return _decode(body)
    raise Unavailable("the request could not be stored; retry with the same request_id")


def _decode(body: bytes) -> list[Notification]:
    return [codec.notification_from(doc) for doc in codec.loads(body)]


@dataclass(frozen=True, slots=True)
class _Content:
    delivery: Delivery
    stored_subject: str
    stored_text: str
    template: TemplateUse | None


class _Renderer:
    """The message per locale for one call: rendered once per locale, and cached across
    calls (rendered-template cache) unless a variable is sensitive, since secrets must not
    sit in a shared cache."""

    def __init__(
        self, command: SendNotification, template: Template | None, values: dict[str, str]
    ) -> None:
        self._command = command
        self._template = template
        self._values = values
        self._by_locale: dict[str, RenderedMessage] = {}
        self._sensitive = template is not None and any(
            v.sensitive for v in template.content.variables
        )

    def _cache_key(self, locale: str) -> str:
        assert self._template is not None
        digest = hashlib.sha256(codec.dumps(sorted(self._values.items())).encode()).hexdigest()
        return f"{self._template.template_id}:{self._template.version}:{locale}:{digest}"

    async def content(self, preferences: Preferences | None, deps: NotificationsDeps) -> _Content:
        inline, template, reference = self._command.inline, self._template, self._command.template
        if template is None or reference is None:
            assert inline is not None
            delivery = Delivery(inline.subject, inline.text_body, inline.html_body)
            return _Content(delivery, inline.subject, inline.text_body, None)
        wanted = [reference.locale, preferences.preferred_locale if preferences else ""]
        localization = template.localization(wanted)
        message = self._by_locale.get(localization.locale)
        if message is None:
            message = await self._render(localization, deps)
            self._by_locale[localization.locale] = message
        use = TemplateUse(
            name=template.name,
            version=template.version,
            locale=localization.locale,
            variables=tuple(sorted(redact_values(template, self._values).items())),
        )
        return _Content(
            Delivery(message.subject, message.text_body, message.html_body),
            message.stored_subject,
            message.stored_text_body,
            use,
        )

    async def _render(self, localization: Localization, deps: NotificationsDeps) -> RenderedMessage:
        assert self._template is not None
        key = self._cache_key(localization.locale)
        if not self._sensitive:
            cached = await deps.cache.rendered(key)
            if cached is not None:
                doc = codec.loads(cached)
                return RenderedMessage(doc[0], doc[1], doc[2], doc[0], doc[1])
        try:
            message = render(self._template, localization, self._values)
        except RenderError as error:
            raise error.to_invalid_argument() from None
        if not self._sensitive:
            body = codec.dumps([message.subject, message.text_body, message.html_body])
            await deps.cache.remember_rendered(key, body.encode())
        return message


async def _template_and_values(
    tx: NotificationsUnitOfWork, command: SendNotification, deps: NotificationsDeps
) -> tuple[Template | None, dict[str, str]]:
    if command.template is None:
        return None, {}
    assert command.channel is not None
    template = await load_template(tx, deps, command.template.name, command.template.version)
    if template.channel is not command.channel:
        raise InvalidArgument(
            [
                FieldViolation(
                    "template.name",
                    f"{template.name} is for {template.channel.value}, not {command.channel.value}",
                )
            ],
            reason=TEMPLATE_CHANNEL_MISMATCH,
        )
    try:
        return template, resolve_values(template, command.template.variables)
    except RenderError as error:
        raise error.to_invalid_argument() from None


async def send_in(
    tx: NotificationsUnitOfWork,
    command: SendNotification,
    principal: Principal,
    deps: NotificationsDeps,
    targets: list[_Target],
    key: ReplyKey | None,
) -> list[Notification]:
    """Create the notifications inside `tx` (not committed). With `key`, also store the reply
    first (its insert raises `DuplicateKeyError` for a twin)."""
    assert command.channel is not None
    channel = command.channel
    now = deps.clock()
    if key is not None:
        # The claim comes first: a twin's insert waits for this transaction, then fails.
        await tx.replies.add(
            key.scope, key.request_id, key.fingerprint, b"[]", now=now, ttl=deps.idempotency_ttl
        )
    template, values = await _template_and_values(tx, command, deps)
    renderer = _Renderer(command, template, values)
    batch_id = deps.new_id()
    created: list[Notification] = []
    held_counts: dict[str, int] = {}
    for target in targets:
        preferences: Preferences | None = None
        suppression: SuppressionReason | None = None
        address = target.address
        if target.user is not None:
            preferences = await tx.preferences.get(target.user.name)
            address = _user_address(target.user, preferences, channel, deps)
            suppression = _suppression(target.user, preferences, address, channel, command)
            if suppression is not None and not command.role:
                raise _refusal(suppression, target.user.name, channel)
        content = await renderer.content(preferences, deps)
        if suppression is None and address is not None:
            await _check_backlog(tx, address, channel, deps, held_counts)
        notification = _new_notification(
            command, principal, deps, target, address, content, suppression, batch_id, now
        )
        await tx.notifications.add(notification)
        await record_change(tx, notification, None, deps)
        created.append(notification)
    if key is not None:
        body = codec.dumps([codec.notification_doc(n) for n in created]).encode()
        await tx.replies.complete(key.scope, key.request_id, body)
    return created


def _new_notification(
    command: SendNotification,
    principal: Principal,
    deps: NotificationsDeps,
    target: _Target,
    address: Address | None,
    content: _Content,
    suppression: SuppressionReason | None,
    batch_id: str,
    now: datetime,
) -> Notification:
    assert command.channel is not None
    scheduled = command.schedule_time is not None and command.schedule_time > now
    if suppression is not None:
        status, hold, due = Status.SUPPRESSED, None, None
    elif scheduled:
        status, hold, due = Status.SCHEDULED, HoldReason.SCHEDULED, command.schedule_time
    else:
        status, hold, due = Status.QUEUED, None, now
    return Notification(
        id=deps.new_id(),
        recipient=RecipientSpec(
            user=command.user,
            role=command.role,
            address=target.address if target.user is None else None,
        ),
        user="" if target.user is None else target.user.name,
        address=address,
        channel=command.channel,
        template=content.template,
        subject=content.stored_subject,
        text_body=content.stored_text,
        priority=command.priority,
        category=command.category,
        status=status,
        hold_reason=hold,
        suppression_reason=suppression,
        schedule_time=command.schedule_time,
        next_attempt_time=due,
        sender=principal.actor(),
        batch_id=batch_id,
        related_resource=command.related_resource,
        create_time=now,
        update_time=now,
        delivery=Delivery() if suppression is not None else content.delivery,
    )


def _suppression(
    user: UserInfo,
    preferences: Preferences | None,
    address: Address | None,
    channel: Channel,
    command: SendNotification,
) -> SuppressionReason | None:
    if user.state is UserState.DELETED:
        return SuppressionReason.RECIPIENT_INACTIVE
    opted_out = suppression_for(preferences or Preferences(user.name), channel, command.category)
    if opted_out is not None:
        return opted_out
    if address is None:
        return SuppressionReason.NO_ADDRESS
    return None


def _refusal(reason: SuppressionReason, user: str, channel: Channel) -> FailedPrecondition:
    if reason is SuppressionReason.RECIPIENT_INACTIVE:
        return FailedPrecondition(f"{user} is deleted", reason=RECIPIENT_INACTIVE)
    if reason is SuppressionReason.OPTED_OUT:
        return FailedPrecondition(
            f"{user} does not receive these messages on {channel.value}",
            reason=RECIPIENT_OPTED_OUT,
        )
    return FailedPrecondition(
        f"no {channel.value} address is known for {user}", reason=RECIPIENT_NO_ADDRESS
    )


async def _check_backlog(
    tx: NotificationsUnitOfWork,
    address: Address,
    channel: Channel,
    deps: NotificationsDeps,
    counted: dict[str, int],
) -> None:
    key = address_hash(address)
    if key not in counted:
        counted[key] = await tx.notifications.held_for(key, channel)
    if counted[key] >= deps.max_held_per_recipient:
        raise ResourceExhausted(
            "the recipient's backlog of held messages is full; retry later",
            reason=RATE_LIMITED,
            retry_after=deps.rate_limit.window,
        )
