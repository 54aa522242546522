"""SQLAlchemy repositories of the notifications service, on a unit of work's session."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Select,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.notifications.adapters import codec
from gatehouse.notifications.adapters.orm import (
    ChangeRow,
    DeadLetterRow,
    NotificationRow,
    PreferenceRow,
    RateLimitRow,
    TemplateRow,
)
from gatehouse.notifications.domain.addresses import Address, Channel
from gatehouse.notifications.domain.notifications import (
    FINAL,
    Category,
    Delivery,
    DeliveryChange,
    Notification,
    RateWindow,
    Status,
)
from gatehouse.notifications.domain.preferences import Preferences
from gatehouse.notifications.domain.templates import Template
from gatehouse.notifications.handlers.ports import (
    DeadLetter,
    NotificationFilter,
    PageCursor,
    StaleVersionError,
    StatsRow,
    StoredReply,
    SweepCounts,
)
from gatehouse.runtime.db import DuplicateKeyError, translate_integrity_errors
from gatehouse.runtime.idempotency import IdempotencyRecordRow

_notifications = cast("Table", NotificationRow.__table__)
_changes = cast("Table", ChangeRow.__table__)
_dead_letters = cast("Table", DeadLetterRow.__table__)
_rate_limits = cast("Table", RateLimitRow.__table__)
_records = cast("Table", IdempotencyRecordRow.__table__)
_REPLY_TYPE = "gatehouse.notifications.Reply"


def address_hash(address: Address | None) -> str:
    """The rate limit's and the recipient filter's key: a hash, so an index stays small
    whatever the URL length."""
    if address is None:
        return ""
    return hashlib.sha256(address.key.encode()).hexdigest()


def rate_key(address: Address, channel: Channel) -> str:
    return hashlib.sha256(f"{channel.value}|{address.key}".encode()).hexdigest()


def _values(n: Notification) -> dict[str, Any]:
    return {
        "status": n.status.value,
        "hold_reason": "" if n.hold_reason is None else n.hold_reason.value,
        "channel": n.channel.value,
        "category": n.category.value,
        "priority": int(n.priority),
        "user": n.user,
        "role": n.recipient.role,
        "address_hash": address_hash(n.address),
        "sender_user": n.sender.user,
        "batch_id": n.batch_id,
        "related_resource": n.related_resource,
        "create_time": n.create_time,
        "update_time": n.update_time,
        "next_attempt_time": n.next_attempt_time,
        "version": n.version,
        "document": codec.dumps(codec.notification_doc(n)),
        # The domain erases the deliverable copy when nothing will send it any more.
        "delivery": "" if n.delivery == Delivery() else codec.delivery_doc(n.delivery),
    }


def _notification(row: NotificationRow) -> Notification:
    return codec.notification_from(
        codec.loads(row.document), delivery=codec.delivery_from(row.delivery)
    )


def _filtered(query: Select[Any], where: NotificationFilter) -> Select[Any]:
    c = _notifications.c
    conditions: list[Any] = []
    if where.visible_to is not None:
        conditions.append(or_(c.user == where.visible_to, c.sender_user == where.visible_to))
    equal = (
        (c.user, where.user),
        (c.role, where.role),
        (c.address_hash, where.address_key),
        (c.batch_id, where.batch_id),
        (c.related_resource, where.related_resource),
    )
    conditions.extend(column == value for column, value in equal if value)
    among = (
        (c.channel, where.channels),
        (c.status, where.statuses),
        (c.category, where.categories),
    )
    conditions.extend(
        column.in_(sorted(v.value for v in values)) for column, values in among if values
    )
    if where.created_from is not None:
        conditions.append(c.create_time >= where.created_from)
    if where.created_before is not None:
        conditions.append(c.create_time < where.created_before)
    return query.where(*conditions) if conditions else query


class SqlAlchemyNotificationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, notification: Notification) -> None:
        with translate_integrity_errors():
            await self._session.execute(
                insert(_notifications).values(
                    id=notification.id, lease_owner="", lease_until=None, **_values(notification)
                )
            )

    async def get(self, notification_id: str) -> Notification | None:
        row = await self._session.get(NotificationRow, notification_id, populate_existing=True)
        return None if row is None else _notification(row)

    async def update(
        self,
        notification: Notification,
        *,
        expected_version: int,
        lease: tuple[str, datetime] | None = None,
    ) -> None:
        values = _values(notification)
        values.update(
            lease_owner="" if lease is None else lease[0],
            lease_until=None if lease is None else lease[1],
        )
        result = await self._session.execute(
            update(_notifications)
            .where(
                _notifications.c.id == notification.id,
                _notifications.c.version == expected_version,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", result).rowcount != 1:
            raise StaleVersionError(notification.id)

    async def page(
        self,
        where: NotificationFilter,
        *,
        newest_first: bool,
        after: PageCursor | None,
        limit: int,
    ) -> list[Notification]:
        c = _notifications.c
        query = _filtered(select(NotificationRow), where)
        if after is not None:
            if newest_first:
                query = query.where(
                    or_(
                        c.create_time < after.create_time,
                        and_(c.create_time == after.create_time, c.id < after.notification_id),
                    )
                )
            else:
                query = query.where(
                    or_(
                        c.create_time > after.create_time,
                        and_(c.create_time == after.create_time, c.id > after.notification_id),
                    )
                )
        order = (c.create_time.desc(), c.id.desc()) if newest_first else (c.create_time, c.id)
        rows = (await self._session.scalars(query.order_by(*order).limit(limit))).all()
        return [_notification(row) for row in rows]

    async def due(self, now: datetime, lease_expired_before: datetime, limit: int) -> list[str]:
        c = _notifications.c
        waiting = select(c.id, c.priority, c.next_attempt_time).where(
            c.status.in_([Status.QUEUED.value, Status.SCHEDULED.value]),
            c.next_attempt_time <= now,
        )
        abandoned = select(c.id, c.priority, c.next_attempt_time).where(
            c.status == Status.SENDING.value, c.lease_until < lease_expired_before
        )
        union = waiting.union_all(abandoned).subquery()
        rows = await self._session.execute(
            select(union.c.id)
            .order_by(union.c.priority.desc(), union.c.next_attempt_time, union.c.id)
            .limit(limit)
        )
        return [row[0] for row in rows]

    async def lease(self, notification_id: str) -> tuple[str, datetime | None] | None:
        row = (
            await self._session.execute(
                select(_notifications.c.lease_owner, _notifications.c.lease_until).where(
                    _notifications.c.id == notification_id
                )
            )
        ).one_or_none()
        return None if row is None else (row[0], row[1])

    async def held_for(self, address_key: str, channel: Channel) -> int:
        c = _notifications.c
        count = await self._session.scalar(
            select(func.count()).where(
                c.address_hash == address_key,
                c.channel == channel.value,
                c.status == Status.SCHEDULED.value,
                c.hold_reason == "RATE_LIMITED",
            )
        )
        return int(count or 0)

    async def stats(
        self,
        created_from: datetime,
        created_before: datetime,
        channels: frozenset[Channel],
        categories: frozenset[Category],
    ) -> list[StatsRow]:
        c = _notifications.c
        query = (
            select(c.channel, c.status, func.count())
            .where(c.create_time >= created_from, c.create_time < created_before)
            .group_by(c.channel, c.status)
        )
        if channels:
            query = query.where(c.channel.in_([ch.value for ch in channels]))
        if categories:
            query = query.where(c.category.in_([k.value for k in categories]))
        rows = await self._session.execute(query)
        return [StatsRow(Channel(ch), Status(st), int(n)) for ch, st, n in rows]


class SqlAlchemyChangeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, change: DeliveryChange) -> None:
        n = change.notification
        await self._session.execute(
            insert(_changes).values(
                id=change.id,
                notification_id=change.notification_id,
                sequence=change.sequence,
                previous_status=None
                if change.previous_status is None
                else change.previous_status.value,
                status=change.status.value,
                channel=n.channel.value,
                recipient_user=n.user,
                sender_user=n.sender.user,
                time=change.time,
                document=codec.dumps(codec.change_doc(change)),
            )
        )

    @staticmethod
    def _change(row: ChangeRow) -> DeliveryChange:
        return codec.change_from(
            codec.loads(row.document),
            change_id=row.id,
            sequence=row.sequence,
            previous=row.previous_status,
            status=row.status,
            time_=row.time,
            visible_to=tuple(u for u in (row.recipient_user, row.sender_user) if u),
        )

    async def get(self, change_id: str) -> DeliveryChange | None:
        row = await self._session.get(ChangeRow, change_id)
        return None if row is None else self._change(row)

    async def latest(self, notification_id: str) -> DeliveryChange | None:
        row = await self._session.scalar(
            select(ChangeRow)
            .where(ChangeRow.notification_id == notification_id)
            .order_by(ChangeRow.sequence.desc())
            .limit(1)
        )
        return None if row is None else self._change(row)

    async def after_sequence(
        self, notification_id: str, sequence: int, limit: int
    ) -> list[DeliveryChange]:
        rows = await self._session.scalars(
            select(ChangeRow)
            .where(ChangeRow.notification_id == notification_id, ChangeRow.sequence > sequence)
            .order_by(ChangeRow.sequence)
            .limit(limit)
        )
        return [self._change(row) for row in rows]

    async def since(self, after_id: str, limit: int) -> list[DeliveryChange]:
        rows = await self._session.scalars(
            select(ChangeRow).where(ChangeRow.id > after_id).order_by(ChangeRow.id).limit(limit)
        )
        return [self._change(row) for row in rows]

    async def oldest_id(self) -> str | None:
        value = await self._session.scalar(select(func.min(ChangeRow.id)))
        return None if value is None else str(value)


class SqlAlchemyTemplateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, template: Template) -> None:
        with translate_integrity_errors():
            async with self._session.begin_nested():
                await self._session.execute(
                    insert(TemplateRow).values(
                        template_id=template.template_id,
                        version=template.version,
                        channel=template.channel.value,
                        create_time=template.update_time,
                        document=codec.dumps(codec.template_doc(template)),
                    )
                )

    async def get(self, template_id: str, version: int = 0) -> Template | None:
        query = select(TemplateRow.document).where(TemplateRow.template_id == template_id)
        if version:
            query = query.where(TemplateRow.version == version)
        else:
            query = query.order_by(TemplateRow.version.desc()).limit(1)
        document = await self._session.scalar(query)
        return None if document is None else codec.template_from(codec.loads(document))

    async def exists(self, template_id: str) -> bool:
        found = await self._session.scalar(
            select(TemplateRow.version).where(TemplateRow.template_id == template_id).limit(1)
        )
        return found is not None

    async def page(self, channel: Channel | None, after: str, limit: int) -> list[Template]:
        latest = (
            select(TemplateRow.template_id, func.max(TemplateRow.version).label("version"))
            .group_by(TemplateRow.template_id)
            .subquery()
        )
        query = select(TemplateRow.document).join(
            latest,
            and_(
                TemplateRow.template_id == latest.c.template_id,
                TemplateRow.version == latest.c.version,
            ),
        )
        if channel is not None:
            query = query.where(TemplateRow.channel == channel.value)
        if after:
            query = query.where(TemplateRow.template_id > after)
        rows = await self._session.scalars(query.order_by(TemplateRow.template_id).limit(limit))
        return [codec.template_from(codec.loads(doc)) for doc in rows]


class SqlAlchemyPreferenceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, user: str) -> Preferences | None:
        document = await self._session.scalar(
            select(PreferenceRow.document).where(PreferenceRow.user == user)
        )
        return None if document is None else codec.preferences_from(codec.loads(document))

    async def save(self, preferences: Preferences, *, expected_version: int) -> None:
        document = codec.dumps(codec.preferences_doc(preferences))
        if expected_version == 0:
            try:
                with translate_integrity_errors():
                    async with self._session.begin_nested():
                        await self._session.execute(
                            insert(PreferenceRow).values(
                                user=preferences.user,
                                version=preferences.version,
                                document=document,
                            )
                        )
            except DuplicateKeyError as error:
                raise StaleVersionError(preferences.user) from error
            return
        result = await self._session.execute(
            update(PreferenceRow)
            .where(
                PreferenceRow.user == preferences.user, PreferenceRow.version == expected_version
            )
            .values(version=preferences.version, document=document)
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", result).rowcount != 1:
            raise StaleVersionError(preferences.user)


class SqlAlchemyRateLimitRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def window(self, key: str) -> RateWindow | None:
        query = select(RateLimitRow.window_start, RateLimitRow.used).where(RateLimitRow.key == key)
        if self._session.get_bind().dialect.name == "postgresql":
            # Two workers claiming messages to one address serialise here.
            query = query.with_for_update()
        row = (await self._session.execute(query)).one_or_none()
        return None if row is None else RateWindow(row[0], row[1])

    async def save(self, key: str, window: RateWindow) -> None:
        result = await self._session.execute(
            update(RateLimitRow)
            .where(RateLimitRow.key == key)
            .values(window_start=window.start, used=window.used)
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", result).rowcount == 0:
            with translate_integrity_errors():
                async with self._session.begin_nested():
                    await self._session.execute(
                        insert(RateLimitRow).values(
                            key=key, window_start=window.start, used=window.used
                        )
                    )


class SqlAlchemyReplyStore:
    """Replies of idempotent RPCs in the runtime's `idempotency_records`."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, scope: str, request_id: str) -> StoredReply | None:
        row = (
            await self._session.execute(
                select(
                    _records.c.request_fingerprint, _records.c.expires_at, _records.c.response
                ).where(_records.c.scope == scope, _records.c.request_id == request_id)
            )
        ).one_or_none()
        return None if row is None else StoredReply(row[0], row[1], row[2])

    async def add(
        self,
        scope: str,
        request_id: str,
        fingerprint: bytes,
        body: bytes,
        *,
        now: datetime,
        ttl: timedelta,
    ) -> None:
        with translate_integrity_errors():
            await self._session.execute(
                insert(_records).values(
                    scope=scope,
                    request_id=request_id,
                    request_fingerprint=fingerprint,
                    response=body,
                    response_type=_REPLY_TYPE,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )

    async def complete(self, scope: str, request_id: str, body: bytes) -> None:
        await self._session.execute(
            update(_records)
            .where(_records.c.scope == scope, _records.c.request_id == request_id)
            .values(response=body)
        )

    async def delete(self, scope: str, request_id: str) -> None:
        await self._session.execute(
            delete(_records).where(_records.c.scope == scope, _records.c.request_id == request_id)
        )


class SqlAlchemyDeadLetterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, notification: Notification, now: datetime) -> None:
        # A requeued notification that runs out of retries again is dead-lettered again.
        await self.remove(notification.id)
        await self._session.execute(
            insert(_dead_letters).values(
                notification_id=notification.id,
                dead_time=now,
                failure_code=notification.failure_code[:64],
                document=codec.dumps(codec.notification_doc(notification)),
            )
        )

    async def remove(self, notification_id: str) -> None:
        await self._session.execute(
            delete(_dead_letters).where(_dead_letters.c.notification_id == notification_id)
        )

    async def page(self, after: tuple[datetime, str] | None, limit: int) -> list[DeadLetter]:
        c = _dead_letters.c
        query = select(c.document, c.dead_time, c.notification_id)
        if after is not None:
            query = query.where(
                or_(
                    c.dead_time > after[0],
                    and_(c.dead_time == after[0], c.notification_id > after[1]),
                )
            )
        rows = await self._session.execute(
            query.order_by(c.dead_time, c.notification_id).limit(limit)
        )
        return [
            DeadLetter(codec.notification_from(codec.loads(document)), dead_time)
            for document, dead_time, _ in rows
        ]


class SqlAlchemyRetentionStore:
    """Deletes what the retention lets go, in bounded batches (short transactions, so the
    worker and the API are not held up behind a sweep)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def sweep_finished(self, before: datetime, limit: int) -> SweepCounts:
        c = _notifications.c
        finished = (
            c.status.in_(sorted(status.value for status in FINAL)),
            c.update_time < before,
        )
        ids = list(
            (
                await self._session.scalars(
                    select(c.id).where(*finished).order_by(c.update_time, c.id).limit(limit)
                )
            ).all()
        )
        if not ids:
            return SweepCounts()
        # The conditions again: a requeue committed since the select keeps its row, and the
        # change log and dead letter of a notification that is still there stay too.
        gone = await self._session.execute(delete(_notifications).where(c.id.in_(ids), *finished))
        remaining = select(c.id).where(c.id.in_(ids))
        changes = await self._session.execute(
            delete(_changes).where(
                _changes.c.notification_id.in_(ids), _changes.c.notification_id.not_in(remaining)
            )
        )
        dead = await self._session.execute(
            delete(_dead_letters).where(
                _dead_letters.c.notification_id.in_(ids),
                _dead_letters.c.notification_id.not_in(remaining),
            )
        )
        return SweepCounts(
            notifications=_count(gone), changes=_count(changes), dead_letters=_count(dead)
        )

    async def sweep_rate_windows(self, before: datetime, limit: int) -> int:
        keys = select(_rate_limits.c.key).where(_rate_limits.c.window_start < before).limit(limit)
        result = await self._session.execute(
            delete(_rate_limits).where(
                _rate_limits.c.key.in_(keys), _rate_limits.c.window_start < before
            )
        )
        return _count(result)

    async def sweep_replies(self, now: datetime, limit: int) -> int:
        r = _records.c
        expired = select(r.scope, r.request_id).where(r.expires_at <= now).limit(limit).subquery()
        result = await self._session.execute(
            delete(_records).where(
                tuple_(r.scope, r.request_id).in_(select(expired.c.scope, expired.c.request_id)),
                r.expires_at <= now,
            )
        )
        return _count(result)


def _count(result: object) -> int:
    return max(0, cast("CursorResult[Any]", result).rowcount)
