"""Alerts: the rules' and people's; deduplicated, acknowledged, resolved, listed."""

from __future__ import annotations

from datetime import datetime

from gatehouse.monitoring import mapping
from gatehouse.monitoring.domain import names
from gatehouse.monitoring.domain.alerts import (
    MAX_DEDUP_KEY,
    MAX_SUMMARY,
    MAX_TEXT,
    Actor,
    Alert,
    AlertCandidate,
)
from gatehouse.monitoring.domain.buildings import Building
from gatehouse.monitoring.domain.enums import AlertRule, AlertState, Severity
from gatehouse.monitoring.handlers import events
from gatehouse.monitoring.handlers.buildings import filters_of
from gatehouse.monitoring.handlers.common import (
    IdempotencyKey,
    LostIdempotencyRaceError,
    MonitoringDependencies,
    PageTokens,
    building_or_404,
    page_size,
    remember,
    replay,
)
from gatehouse.monitoring.handlers.ports import AlertQuery, MonitoringUnitOfWork, UnitOfWorkFactory
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import FieldViolation, InvalidArgument, NotFound
from gatehouse.runtime.ids import new_ulid

_SEVERITIES = frozenset(int(severity) for severity in Severity if severity)
_STATES = frozenset(int(state) for state in AlertState if state)
_RULES = frozenset(int(rule) for rule in AlertRule if rule)
ORDERS = ("raise_time desc", "raise_time", "severity desc")


async def raise_or_occur(
    candidate: AlertCandidate,
    raised_by: Actor,
    building: Building,
    uow: MonitoringUnitOfWork,
    now: datetime,
) -> tuple[Alert, bool]:
    """A new alert (publishing `alert.triggered`), or, when an unresolved alert of the
    building has the candidate's dedup key, one more occurrence of it. Inside `uow`."""
    if candidate.dedup_key:
        existing = await uow.alerts.get_unresolved(candidate.building_id, candidate.dedup_key)
        if existing is not None:
            existing.occur(candidate.occurred_at or now)
            await uow.alerts.update(existing)
            return existing, True
    alert = Alert.raise_from(new_ulid(), candidate, raised_by, now)
    try:
        await uow.alerts.add(alert)
    except DuplicateKeyError:
        # A concurrent twin raised it first (another replica's rule, the same manual key).
        existing = await uow.alerts.get_unresolved(candidate.building_id, candidate.dedup_key)
        if existing is None:
            raise
        existing.occur(candidate.occurred_at or now)
        await uow.alerts.update(existing)
        return existing, True
    await uow.outbox.add(events.alert_triggered(alert, building))
    return alert, False


def _raise_problems(request: monitoring_pb2.RaiseAlertRequest) -> list[FieldViolation]:
    problems = []
    if int(request.severity) not in _SEVERITIES:
        problems.append(FieldViolation("severity", "is required"))
    if not request.summary.strip():
        problems.append(FieldViolation("summary", "is required"))
    elif len(request.summary) > MAX_SUMMARY:
        problems.append(FieldViolation("summary", f"at most {MAX_SUMMARY} characters"))
    if len(request.description) > MAX_TEXT:
        problems.append(FieldViolation("description", f"at most {MAX_TEXT} characters"))
    if len(request.dedup_key) > MAX_DEDUP_KEY:
        problems.append(FieldViolation("dedup_key", f"at most {MAX_DEDUP_KEY} characters"))
    if request.device and names.device_ids(request.device) is None:
        problems.append(FieldViolation("device", "must look like buildings/{id}/devices/{id}"))
    return problems


async def raise_alert(
    request: monitoring_pb2.RaiseAlertRequest,
    raised_by: Actor,
    key: IdempotencyKey | None,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.RaiseAlertResponse:
    problems = _raise_problems(request)
    if problems:
        raise InvalidArgument(problems)
    building_id = names.building_id(request.parent)
    assert building_id is not None
    device_ids = names.device_ids(request.device) if request.device else None
    if device_ids is not None and device_ids[0] != building_id:
        raise InvalidArgument(
            [FieldViolation("device", f"must be a device of {request.parent}")],
            reason="DEVICE_NOT_IN_BUILDING",
        )
    parse = monitoring_pb2.RaiseAlertResponse.FromString
    try:
        async with uow_factory() as uow:
            if (replayed := await replay(uow, deps, key, parse)) is not None:
                return replayed
            building = await building_or_404(uow, building_id)
            door = ""
            if device_ids is not None:
                device = await uow.devices.get(*device_ids)
                if device is None:
                    raise NotFound(request.device, reason="DEVICE_NOT_FOUND")
                door = device.door
            now = deps.clock()
            candidate = AlertCandidate(
                building_id=building_id,
                rule=AlertRule.MANUAL,
                severity=Severity(request.severity),
                summary=request.summary.strip(),
                description=request.description,
                device=request.device,
                door=door,
                dedup_key=request.dedup_key,
                occurred_at=now,
            )
            alert, deduplicated = await raise_or_occur(candidate, raised_by, building, uow, now)
            response = monitoring_pb2.RaiseAlertResponse(
                alert=mapping.alert_to_proto(alert), deduplicated=deduplicated
            )
            await remember(uow, deps, key, response)
            await uow.commit()
            return response
    except LostIdempotencyRaceError:
        async with uow_factory() as uow:
            replayed = await replay(uow, deps, key, parse)
            assert replayed is not None
            return replayed


async def _change_alert(
    name: str,
    note: str,
    actor: Actor,
    key: IdempotencyKey | None,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
    *,
    resolve: bool,
) -> monitoring_pb2.Alert:
    if len(note) > MAX_TEXT:
        raise InvalidArgument([FieldViolation("note", f"at most {MAX_TEXT} characters")])
    ids = names.alert_ids(name)
    assert ids is not None
    response_type = (
        monitoring_pb2.ResolveAlertResponse if resolve else monitoring_pb2.AcknowledgeAlertResponse
    )

    def parse(body: bytes) -> monitoring_pb2.Alert:
        return response_type.FromString(body).alert

    try:
        async with uow_factory() as uow:
            if (replayed := await replay(uow, deps, key, parse)) is not None:
                return replayed
            alert = await uow.alerts.get(*ids, for_update=True)
            if alert is None:
                raise NotFound(name, reason="ALERT_NOT_FOUND")
            now = deps.clock()
            if resolve:
                took = alert.resolve(actor, now, note)
                await uow.alerts.update(alert)
                await uow.outbox.add(events.alert_resolved(alert, took))
            else:
                alert.acknowledge(actor, now, note)
                await uow.alerts.update(alert)
                await uow.outbox.add(events.alert_acknowledged(alert))
            message = mapping.alert_to_proto(alert)
            await remember(uow, deps, key, response_type(alert=message))
            await uow.commit()
            return message
    except LostIdempotencyRaceError:
        async with uow_factory() as uow:
            replayed = await replay(uow, deps, key, parse)
            assert replayed is not None
            return replayed


async def acknowledge_alert(
    request: monitoring_pb2.AcknowledgeAlertRequest,
    actor: Actor,
    key: IdempotencyKey | None,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.Alert:
    return await _change_alert(
        request.name, request.note, actor, key, uow_factory, deps, resolve=False
    )


async def resolve_alert(
    request: monitoring_pb2.ResolveAlertRequest,
    actor: Actor,
    key: IdempotencyKey | None,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.Alert:
    return await _change_alert(
        request.name, request.note, actor, key, uow_factory, deps, resolve=True
    )


async def list_alerts(
    request: monitoring_pb2.ListAlertsRequest,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.ListAlertsResponse:
    order = " ".join(request.order_by.split()) or "raise_time desc"
    if order not in ORDERS:
        raise InvalidArgument(
            [FieldViolation("order_by", f"one of {', '.join(repr(o) for o in ORDERS)}")],
            reason="INVALID_ORDER_BY",
        )
    problems = []
    if request.device and names.device_ids(request.device) is None:
        problems.append(FieldViolation("device", "must look like buildings/{id}/devices/{id}"))
    if any(int(state) not in _STATES for state in request.states):
        problems.append(FieldViolation("states", "holds an unknown state"))
    if request.min_severity and int(request.min_severity) not in _SEVERITIES:
        problems.append(FieldViolation("min_severity", "is unknown"))
    if request.rule and int(request.rule) not in _RULES:
        problems.append(FieldViolation("rule", "is unknown"))
    time_range = request.raise_time_range
    start = mapping.from_timestamp(time_range, "start_time", time_range.start_time)
    end = mapping.from_timestamp(time_range, "end_time", time_range.end_time)
    if start is not None and end is not None and end <= start:
        problems.append(FieldViolation("raise_time_range", "end_time must be after start_time"))
    if problems:
        raise InvalidArgument(problems)
    building_id = names.building_id(request.parent)
    filters = filters_of(
        request.parent,
        request.device,
        sorted(int(state) for state in request.states),
        request.min_severity,
        request.rule,
        start,
        end,
        order,
    )
    tokens = PageTokens(deps.sealer, "alerts")
    now = deps.clock()
    position = tokens.read(request.page_token, filters, now)
    expected = 3 if order == "severity desc" else 2
    if position is not None and len(position) != expected:
        raise InvalidArgument(
            [FieldViolation("page_token", "is malformed")], reason="INVALID_PAGE_TOKEN"
        )
    limit = page_size(request.page_size)
    async with uow_factory() as uow:
        if building_id is not None:
            await building_or_404(uow, building_id)
        alerts = await uow.alerts.search(
            AlertQuery(
                building_id=building_id,
                device=request.device or None,
                states=tuple(AlertState(state) for state in request.states),
                min_severity=Severity(request.min_severity) if request.min_severity else None,
                rule=AlertRule(request.rule) if request.rule else None,
                raised_from=start,
                raised_before=end,
                order=order,
                after=tuple(position) if position is not None else None,
                limit=limit + 1,
            )
        )
    response = monitoring_pb2.ListAlertsResponse(
        alerts=[mapping.alert_to_proto(alert) for alert in alerts[:limit]]
    )
    if len(alerts) > limit:
        last = alerts[limit - 1]
        keyset = [last.raise_time.isoformat(), last.id]
        if order == "severity desc":
            keyset.insert(0, str(int(last.severity)))
        response.next_page_token = tokens.make(keyset, filters, now)
    return response
