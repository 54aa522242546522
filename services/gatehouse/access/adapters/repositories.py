"""SQLAlchemy repositories of the access service, on a unit of work's session."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    and_,
    case,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.access.adapters.orm import (
    ChainHeadRow,
    DoorScheduleRow,
    EmergencyRow,
    GrantRow,
    KeypadRow,
    LogEntryRow,
    VisitorRow,
)
from gatehouse.access.domain.chain import GENESIS_HASH, ChainHead, Decision, EntryKind, LogEntry
from gatehouse.access.domain.emergency import Emergency, EmergencyMode
from gatehouse.access.domain.grants import Actor, DenyReason, Grant, GrantState
from gatehouse.access.domain.lockout import KeypadState
from gatehouse.access.domain.schedules import DoorSchedule, DoorScheduleMode
from gatehouse.access.domain.visitors import CheckInMethod, Visitor, VisitorState
from gatehouse.access.handlers.ports import GrantFilter, LogFilter, VisitorFilter
from gatehouse.access.mapping import actor_from_json, actor_json, schedule_from_json, schedule_json
from gatehouse.runtime.db import DuplicateKeyError, translate_integrity_errors


def _actor(text: str | None) -> Actor:
    return actor_from_json(text) or Actor()


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


def _like_json_member(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f'%"{escaped}"%'


# --- grants ----------------------------------------------------------------------------------


def _grant(row: GrantRow) -> Grant:
    return Grant(
        id=row.id,
        building_id=row.building_id,
        holder=row.holder,
        doors=tuple(json.loads(row.doors)),
        pin_digest=row.pin_digest,
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        create_time=row.create_time,
        issued_by=_actor(row.issued_by),
        display_name=row.display_name,
        schedule=None if row.schedule is None else schedule_from_json(row.schedule),
        max_uses=row.max_uses,
        use_count=row.use_count,
        last_use_time=row.last_use_time,
        revoke_time=row.revoke_time,
        revoked_by=actor_from_json(row.revoked_by),
        revoke_reason=row.revoke_reason,
        visitor_id=row.visitor_id,
    )


def _grant_state_condition(state: GrantState, now: datetime) -> ColumnElement[bool]:
    revoked = GrantRow.revoke_time.is_not(None)
    expired = and_(GrantRow.valid_until.is_not(None), GrantRow.valid_until <= now)
    exhausted = and_(GrantRow.max_uses > 0, GrantRow.use_count >= GrantRow.max_uses)
    if state is GrantState.REVOKED:
        return revoked
    if state is GrantState.EXPIRED:
        return and_(~revoked, expired)
    if state is GrantState.EXHAUSTED:
        return and_(~revoked, ~expired, exhausted)
    open_ = and_(~revoked, ~expired, ~exhausted)
    if state is GrantState.PENDING:
        return and_(open_, GrantRow.valid_from > now)
    return and_(open_, GrantRow.valid_from <= now)


def _not_ended(now: datetime) -> ColumnElement[bool]:
    return and_(
        GrantRow.revoke_time.is_(None),
        or_(GrantRow.valid_until.is_(None), GrantRow.valid_until > now),
        or_(GrantRow.max_uses == 0, GrantRow.use_count < GrantRow.max_uses),
    )


class SqlAlchemyGrantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, grant: Grant) -> None:
        row = GrantRow(
            id=grant.id,
            building_id=grant.building_id,
            holder=grant.holder,
            display_name=grant.display_name,
            doors=json.dumps(list(grant.doors)),
            pin_digest=grant.pin_digest,
            open_digest=grant.pin_digest,
            valid_from=grant.valid_from,
            valid_until=grant.valid_until,
            schedule=None if grant.schedule is None else schedule_json(grant.schedule),
            max_uses=grant.max_uses,
            use_count=grant.use_count,
            last_use_time=grant.last_use_time,
            create_time=grant.create_time,
            issued_by=actor_json(grant.issued_by) or "{}",
            revoke_time=None,
            revoked_by=None,
            revoke_reason="",
            visitor_id=grant.visitor_id,
        )
        # The savepoint keeps the transaction usable after a PIN collision (try another PIN).
        with translate_integrity_errors():
            async with self._session.begin_nested():
                self._session.add(row)

    async def get(self, building_id: str, grant_id: str) -> Grant | None:
        row = await self._session.get(GrantRow, grant_id, populate_existing=True)
        if row is None or row.building_id != building_id:
            return None
        return _grant(row)

    async def with_digest(self, building_id: str, digest: str) -> list[Grant]:
        rows = await self._session.scalars(
            select(GrantRow)
            .where(GrantRow.building_id == building_id, GrantRow.pin_digest == digest)
            .execution_options(populate_existing=True)
        )
        return [_grant(row) for row in rows]

    async def digest_taken(self, building_id: str, digest: str, now: datetime) -> bool:
        # Grants that expired by time still hold `open_digest`: release it first.
        await self._session.execute(
            update(GrantRow)
            .where(
                GrantRow.building_id == building_id,
                GrantRow.open_digest == digest,
                ~_not_ended(now),
            )
            .values(open_digest=None)
            .execution_options(synchronize_session=False)
        )
        found = await self._session.scalar(
            select(GrantRow.id).where(
                GrantRow.building_id == building_id, GrantRow.open_digest == digest
            )
        )
        return found is not None

    async def count_use(self, grant: Grant, now: datetime) -> bool:
        # One conditional statement: the row lock it takes orders concurrent uses, and the
        # condition is evaluated again after waiting, so a one-use PIN is counted once.
        result = await self._session.execute(
            update(GrantRow)
            .where(GrantRow.id == grant.id, _not_ended(now))
            .values(
                use_count=GrantRow.use_count + 1,
                last_use_time=now,
                open_digest=case(
                    (
                        and_(GrantRow.max_uses > 0, GrantRow.use_count + 1 >= GrantRow.max_uses),
                        None,
                    ),
                    else_=GrantRow.open_digest,
                ),
            )
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def revoke(self, grant: Grant) -> bool:
        result = await self._session.execute(
            update(GrantRow)
            .where(GrantRow.id == grant.id, GrantRow.revoke_time.is_(None))
            .values(
                revoke_time=grant.revoke_time,
                revoked_by=actor_json(grant.revoked_by),
                revoke_reason=grant.revoke_reason,
                open_digest=None,
            )
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def open_of_visitor(
        self, building_id: str, visitor_id: str, now: datetime
    ) -> list[Grant]:
        rows = await self._session.scalars(
            select(GrantRow)
            .where(
                GrantRow.building_id == building_id,
                GrantRow.visitor_id == visitor_id,
                _not_ended(now),
            )
            .execution_options(populate_existing=True)
        )
        return [_grant(row) for row in rows]

    async def page(
        self,
        building_id: str,
        filters: GrantFilter,
        after: tuple[datetime, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Grant]:
        query = select(GrantRow).where(GrantRow.building_id == building_id)
        if filters.holder:
            query = query.where(GrantRow.holder == filters.holder)
        if filters.door_id:
            query = query.where(
                GrantRow.doors.like(_like_json_member(filters.door_id), escape="\\")
            )
        if filters.states:
            query = query.where(
                or_(*(_grant_state_condition(state, now) for state in filters.states))
            )
        if after is not None:
            query = query.where(tuple_(GrantRow.create_time, GrantRow.id) < tuple_(*after))
        query = query.order_by(GrantRow.create_time.desc(), GrantRow.id.desc()).limit(limit)
        rows = await self._session.scalars(query.execution_options(populate_existing=True))
        return [_grant(row) for row in rows]


# --- visitors --------------------------------------------------------------------------------


def _visitor(row: VisitorRow) -> Visitor:
    return Visitor(
        id=row.id,
        building_id=row.building_id,
        display_name=row.display_name,
        host=row.host,
        expected_arrival_time=row.expected_arrival_time,
        invitation_expire_time=row.invitation_expire_time,
        code_digest=row.code_digest,
        create_time=row.create_time,
        registered_by=_actor(row.registered_by),
        company=row.company,
        expected_departure_time=row.expected_departure_time,
        doors=tuple(json.loads(row.doors)),
        note=row.note,
        grant_id=row.grant_id,
        check_in_time=row.check_in_time,
        check_out_time=row.check_out_time,
        check_in_method=CheckInMethod(row.check_in_method) if row.check_in_method else None,
    )


def _visitor_state_condition(state: VisitorState, now: datetime) -> ColumnElement[bool]:
    out = VisitorRow.check_out_time.is_not(None)
    inside = VisitorRow.check_in_time.is_not(None)
    if state is VisitorState.CHECKED_OUT:
        return out
    if state is VisitorState.CHECKED_IN:
        return and_(~out, inside)
    if state is VisitorState.EXPIRED:
        return and_(~out, ~inside, VisitorRow.invitation_expire_time <= now)
    return and_(~out, ~inside, VisitorRow.invitation_expire_time > now)


class SqlAlchemyVisitorRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def _values(self, visitor: Visitor) -> dict[str, Any]:
        return {
            "building_id": visitor.building_id,
            "display_name": visitor.display_name,
            "company": visitor.company,
            "host": visitor.host,
            "expected_arrival_time": visitor.expected_arrival_time,
            "expected_departure_time": visitor.expected_departure_time,
            "invitation_expire_time": visitor.invitation_expire_time,
            "doors": json.dumps(list(visitor.doors)),
            "note": visitor.note,
            "code_digest": visitor.code_digest,
            "grant_id": visitor.grant_id,
            "check_in_time": visitor.check_in_time,
            "check_in_method": int(visitor.check_in_method or 0),
            "check_out_time": visitor.check_out_time,
            "create_time": visitor.create_time,
            "registered_by": actor_json(visitor.registered_by) or "{}",
        }

    async def add(self, visitor: Visitor) -> None:
        with translate_integrity_errors():
            async with self._session.begin_nested():
                self._session.add(VisitorRow(id=visitor.id, **self._values(visitor)))

    async def get(self, building_id: str, visitor_id: str) -> Visitor | None:
        row = await self._session.get(
            VisitorRow, visitor_id, populate_existing=True, with_for_update=True
        )
        if row is None or row.building_id != building_id:
            return None
        return _visitor(row)

    async def with_code(self, building_id: str, code_digest: str) -> Visitor | None:
        row = await self._session.scalar(
            select(VisitorRow)
            .where(VisitorRow.building_id == building_id, VisitorRow.code_digest == code_digest)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return None if row is None else _visitor(row)

    async def update(self, visitor: Visitor) -> None:
        await self._session.execute(
            update(VisitorRow)
            .where(VisitorRow.id == visitor.id)
            .values(**self._values(visitor))
            .execution_options(synchronize_session=False)
        )

    async def page(
        self,
        building_id: str,
        filters: VisitorFilter,
        after: tuple[datetime, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Visitor]:
        query = select(VisitorRow).where(VisitorRow.building_id == building_id)
        if filters.host:
            query = query.where(VisitorRow.host == filters.host)
        if filters.states:
            query = query.where(
                or_(*(_visitor_state_condition(state, now) for state in filters.states))
            )
        if filters.arrival_from is not None:
            query = query.where(VisitorRow.expected_arrival_time >= filters.arrival_from)
        if filters.arrival_until is not None:
            query = query.where(VisitorRow.expected_arrival_time < filters.arrival_until)
        if after is not None:
            query = query.where(
                tuple_(VisitorRow.expected_arrival_time, VisitorRow.id) > tuple_(*after)
            )
        query = query.order_by(VisitorRow.expected_arrival_time, VisitorRow.id).limit(limit)
        rows = await self._session.scalars(query.execution_options(populate_existing=True))
        return [_visitor(row) for row in rows]


# --- door schedules, emergencies, keypads ----------------------------------------------------


def _door_schedule(row: DoorScheduleRow) -> DoorSchedule:
    return DoorSchedule(
        building_id=row.building_id,
        door_id=row.door_id,
        mode=DoorScheduleMode(row.mode),
        schedule=schedule_from_json(row.schedule),
        etag=row.etag,
        update_time=row.update_time,
        updated_by=row.updated_by,
        held=row.held,
    )


class SqlAlchemyDoorScheduleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, building_id: str, door_id: str) -> DoorSchedule | None:
        row = await self._session.get(
            DoorScheduleRow, (building_id, door_id), populate_existing=True
        )
        return None if row is None else _door_schedule(row)

    async def tracked(self) -> list[DoorSchedule]:
        """Schedules whose doors may need a hold or a relock: business-hours mode, or held."""
        rows = await self._session.scalars(
            select(DoorScheduleRow)
            .where(
                or_(
                    DoorScheduleRow.mode == int(DoorScheduleMode.UNLOCKED_DURING_WINDOWS),
                    DoorScheduleRow.held.is_(True),
                )
            )
            .execution_options(populate_existing=True)
        )
        return [_door_schedule(row) for row in rows]

    async def mark_held(self, building_id: str, door_id: str, held: bool) -> bool:
        """Record the controller's new state unless another replica already did."""
        result = await self._session.execute(
            update(DoorScheduleRow)
            .where(
                DoorScheduleRow.building_id == building_id,
                DoorScheduleRow.door_id == door_id,
                DoorScheduleRow.held.is_(not held),
            )
            .values(held=held)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def put(self, schedule: DoorSchedule, previous_etag: str | None) -> bool:
        values = {
            "mode": int(schedule.mode),
            "schedule": schedule_json(schedule.schedule),
            "etag": schedule.etag,
            "update_time": schedule.update_time,
            "updated_by": schedule.updated_by,
        }
        condition = and_(
            DoorScheduleRow.building_id == schedule.building_id,
            DoorScheduleRow.door_id == schedule.door_id,
        )
        if previous_etag is not None:
            condition = and_(condition, DoorScheduleRow.etag == previous_etag)
        result = await self._session.execute(
            update(DoorScheduleRow)
            .where(condition)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) == 1:
            return True
        if previous_etag:
            return False
        try:
            with translate_integrity_errors():
                async with self._session.begin_nested():
                    self._session.add(
                        DoorScheduleRow(
                            building_id=schedule.building_id, door_id=schedule.door_id, **values
                        )
                    )
        except DuplicateKeyError:
            return False
        return True


class SqlAlchemyEmergencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, building_id: str) -> Emergency | None:
        row = await self._session.get(EmergencyRow, building_id, populate_existing=True)
        if row is None:
            return None
        return Emergency(
            building_id=row.building_id,
            active=row.active,
            mode=EmergencyMode(row.mode),
            reason=row.reason,
            triggered_by=_actor(row.triggered_by),
            trigger_time=row.trigger_time,
            source_alert=row.source_alert,
            cleared_by=actor_from_json(row.cleared_by),
            clear_time=row.clear_time,
            clear_reason=row.clear_reason,
        )

    async def put(self, emergency: Emergency) -> None:
        row = await self._session.get(EmergencyRow, emergency.building_id)
        if row is None:
            row = EmergencyRow(building_id=emergency.building_id)
            self._session.add(row)
        row.active = emergency.active
        row.mode = int(emergency.mode)
        row.reason = emergency.reason
        row.triggered_by = actor_json(emergency.triggered_by) or "{}"
        row.trigger_time = emergency.trigger_time
        row.source_alert = emergency.source_alert
        row.cleared_by = actor_json(emergency.cleared_by)
        row.clear_time = emergency.clear_time
        row.clear_reason = emergency.clear_reason
        await self._session.flush()


class SqlAlchemyKeypadRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, building_id: str, door_id: str) -> KeypadState:
        row = await self._session.get(KeypadRow, (building_id, door_id), populate_existing=True)
        if row is None:
            return KeypadState(building_id, door_id)
        return KeypadState(
            building_id,
            door_id,
            tuple(datetime.fromisoformat(text) for text in json.loads(row.failures)),
            row.locked_until,
        )

    async def put(self, state: KeypadState) -> None:
        row = await self._session.get(KeypadRow, (state.building_id, state.door_id))
        if row is None:
            row = KeypadRow(building_id=state.building_id, door_id=state.door_id)
            self._session.add(row)
        row.failures = json.dumps([time.isoformat() for time in state.failures])
        row.locked_until = state.locked_until
        await self._session.flush()


# --- the access log --------------------------------------------------------------------------


def _entry(row: LogEntryRow) -> LogEntry:
    return LogEntry(
        id=row.id,
        building_id=row.building_id,
        sequence=row.sequence,
        kind=EntryKind(row.kind),
        time=row.time,
        event_id=row.event_id,
        door_id=row.door_id,
        decision=Decision(row.decision),
        deny_reason=DenyReason(row.deny_reason) if row.deny_reason else None,
        grant_id=row.grant_id,
        holder=row.holder,
        actor=_actor(row.actor),
        reason=row.reason,
        emergency_mode=row.emergency_mode,
        previous_hash=row.previous_hash,
        entry_hash=row.entry_hash,
    )


class SqlAlchemyAccessLogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_head(self, building_id: str) -> ChainHead:
        query = select(ChainHeadRow).where(ChainHeadRow.building_id == building_id)
        row = await self._session.scalar(
            query.with_for_update().execution_options(populate_existing=True)
        )
        if row is None:
            try:
                with translate_integrity_errors():
                    async with self._session.begin_nested():
                        self._session.add(
                            ChainHeadRow(
                                building_id=building_id, sequence=0, entry_hash=GENESIS_HASH
                            )
                        )
            except DuplicateKeyError:
                pass  # a concurrent first entry created it: lock theirs
            row = await self._session.scalar(
                query.with_for_update().execution_options(populate_existing=True)
            )
            if row is None:
                raise RuntimeError(f"the chain head of building {building_id} vanished")
        return ChainHead(building_id, row.sequence, row.entry_hash)

    async def head(self, building_id: str) -> ChainHead | None:
        row = await self._session.get(ChainHeadRow, building_id, populate_existing=True)
        return None if row is None else ChainHead(building_id, row.sequence, row.entry_hash)

    async def append(self, entry: LogEntry, head: ChainHead) -> None:
        self._session.add(
            LogEntryRow(
                id=entry.id,
                building_id=entry.building_id,
                sequence=entry.sequence,
                kind=int(entry.kind),
                time=entry.time,
                door_id=entry.door_id,
                decision=int(entry.decision),
                deny_reason=int(entry.deny_reason or 0),
                grant_id=entry.grant_id,
                holder=entry.holder,
                actor=actor_json(entry.actor) or "{}",
                reason=entry.reason,
                emergency_mode=entry.emergency_mode,
                event_id=entry.event_id,
                previous_hash=entry.previous_hash,
                entry_hash=entry.entry_hash,
            )
        )
        await self._session.execute(
            update(ChainHeadRow)
            .where(ChainHeadRow.building_id == head.building_id)
            .values(sequence=head.sequence, entry_hash=head.entry_hash)
            .execution_options(synchronize_session=False)
        )
        with translate_integrity_errors():
            await self._session.flush()

    async def by_event_id(self, event_id: str) -> LogEntry | None:
        row = await self._session.scalar(
            select(LogEntryRow).where(LogEntryRow.event_id == event_id)
        )
        return None if row is None else _entry(row)

    async def range(self, building_id: str, start: int, end: int, limit: int) -> list[LogEntry]:
        rows = await self._session.scalars(
            select(LogEntryRow)
            .where(
                LogEntryRow.building_id == building_id,
                LogEntryRow.sequence >= start,
                LogEntryRow.sequence <= end,
            )
            .order_by(LogEntryRow.sequence)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return [_entry(row) for row in rows]

    async def at(self, building_id: str, sequence: int) -> LogEntry | None:
        row = await self._session.scalar(
            select(LogEntryRow).where(
                LogEntryRow.building_id == building_id, LogEntryRow.sequence == sequence
            )
        )
        return None if row is None else _entry(row)

    async def page(
        self,
        building_id: str,
        filters: LogFilter,
        after: int | None,
        limit: int,
        *,
        descending: bool,
    ) -> list[LogEntry]:
        query = select(LogEntryRow).where(LogEntryRow.building_id == building_id)
        if filters.door_id:
            query = query.where(LogEntryRow.door_id == filters.door_id)
        if filters.holder:
            query = query.where(LogEntryRow.holder == filters.holder)
        if filters.decision is not None:
            query = query.where(LogEntryRow.decision == int(filters.decision))
        if filters.kinds:
            query = query.where(LogEntryRow.kind.in_([int(kind) for kind in filters.kinds]))
        if filters.time_from is not None:
            query = query.where(LogEntryRow.time >= filters.time_from)
        if filters.time_until is not None:
            query = query.where(LogEntryRow.time < filters.time_until)
        if after is not None:
            query = query.where(
                LogEntryRow.sequence < after if descending else LogEntryRow.sequence > after
            )
        order = LogEntryRow.sequence.desc() if descending else LogEntryRow.sequence
        rows = await self._session.scalars(query.order_by(order).limit(limit))
        return [_entry(row) for row in rows]
