"""gRPC entrypoint of the notifications service: a thin servicer, proto -> command -> handler ->
proto. No rules and no status codes here: handlers raise domain errors, the error interceptor
maps them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from typing_extensions import override

from gatehouse.common.v1 import common_pb2
from gatehouse.notifications import mapping
from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.notifications import Category, Priority
from gatehouse.notifications.domain.templates import (
    Localization,
    TemplateContent,
    TemplateVariable,
)
from gatehouse.notifications.handlers import preferences as prefs
from gatehouse.notifications.handlers import queries, templates
from gatehouse.notifications.handlers.common import NotificationsDeps, Principal
from gatehouse.notifications.handlers.ports import NotificationsUnitOfWork
from gatehouse.notifications.handlers.send import (
    AddressInput,
    InlineInput,
    SendNotification,
    TemplateInput,
    send_notification,
)
from gatehouse.notifications.handlers.watch import ChangeItem, WatchDeliveries, watch_deliveries
from gatehouse.notifications.v1 import notifications_pb2 as pb
from gatehouse.notifications.v1 import notifications_pb2_grpc
from gatehouse.runtime.errors import FieldViolation, InvalidArgument
from gatehouse.runtime.live import LiveSource
from gatehouse.runtime.principal import current_principal, request_fingerprint

UnitOfWorkFactory = Callable[[], NotificationsUnitOfWork]
Context = grpc.aio.ServicerContext[Any, Any]


def _time(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def _channel(value: int, field_name: str, *, required: bool = True) -> Channel | None:
    if value == pb.CHANNEL_UNSPECIFIED and not required:
        return None
    channel = mapping.CHANNEL_FROM_PROTO.get(value)
    if channel is None and value != pb.CHANNEL_UNSPECIFIED:
        raise InvalidArgument([FieldViolation(field_name, f"unknown channel {value}")])
    return channel


def _address(message: pb.Address) -> AddressInput:
    kind_name = message.WhichOneof("kind")
    if kind_name is None:
        return AddressInput(None, "")
    return AddressInput(mapping.ADDRESS_KIND_FROM_FIELD[kind_name], getattr(message, kind_name))


def _content(template: pb.Template) -> TemplateContent:
    return TemplateContent(
        display_name=template.display_name,
        description=template.description,
        channel=_channel(template.channel, "template.channel") or Channel.EMAIL,
        default_locale=template.default_locale,
        localizations=tuple(
            Localization(loc.locale, loc.subject, loc.text_body, loc.html_body)
            for loc in template.localizations
        ),
        variables=tuple(
            TemplateVariable(v.name, v.description, v.required, v.default_value, v.sensitive)
            for v in template.variables
        ),
    )


def _template_id(name: str) -> str:
    return name.removeprefix("templates/")


def principal() -> Principal:
    return current_principal(Principal)


class NotificationsServicer(notifications_pb2_grpc.NotificationsServiceServicer):
    """Email and webhook delivery, templates, preferences and delivery tracking."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        deps: Callable[[], NotificationsDeps],
        live: LiveSource,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._uow = uow
        self._deps = deps
        self._live = live
        self._stopping = stopping

    @override
    async def SendNotification(
        self, request: pb.SendNotificationRequest, context: Context
    ) -> pb.SendNotificationResponse:
        target = request.recipient.WhichOneof("target")
        content = request.WhichOneof("content")
        command = SendNotification(
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
            channel=_channel(request.channel, "channel", required=False),
            user=request.recipient.user if target == "user" else "",
            role=request.recipient.role if target == "role" else "",
            address=_address(request.recipient.address) if target == "address" else None,
            template=TemplateInput(
                name=request.template.name,
                version=request.template.version,
                locale=request.template.locale,
                variables=dict(request.template.variables),
            )
            if content == "template"
            else None,
            inline=InlineInput(
                request.inline_content.subject,
                request.inline_content.text_body,
                request.inline_content.html_body,
            )
            if content == "inline_content"
            else None,
            priority=mapping.PRIORITY_FROM_PROTO.get(request.priority, Priority.NORMAL),
            category=mapping.CATEGORY_FROM_PROTO.get(request.category, Category.TRANSACTIONAL),
            schedule_time=_time(request.schedule_time)
            if request.HasField("schedule_time")
            else None,
            related_resource=request.related_resource,
        )
        created = await send_notification(command, principal(), self._uow(), self._deps())
        return pb.SendNotificationResponse(
            notifications=[mapping.notification_to_proto(n) for n in created]
        )

    @override
    async def GetNotification(
        self, request: pb.GetNotificationRequest, context: Context
    ) -> pb.GetNotificationResponse:
        found = await queries.get_notification(
            request.name.removeprefix("notifications/"), principal(), self._uow()
        )
        return pb.GetNotificationResponse(notification=mapping.notification_to_proto(found))

    @override
    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        time_range = request.create_time_range
        query = queries.ListNotifications(
            page_size=request.page_size,
            page_token=request.page_token,
            recipient=request.recipient,
            channels=tuple(mapping.CHANNEL_FROM_PROTO.get(c) for c in request.channels),
            statuses=tuple(mapping.STATUS_FROM_PROTO.get(s) for s in request.statuses),
            categories=tuple(mapping.CATEGORY_FROM_PROTO.get(c) for c in request.categories),
            created_from=_time(time_range.start_time)
            if time_range.HasField("start_time")
            else None,
            created_before=_time(time_range.end_time) if time_range.HasField("end_time") else None,
            batch_id=request.batch_id,
            related_resource=request.related_resource,
            order_by=request.order_by,
        )
        page = await queries.list_notifications(query, principal(), self._uow(), self._deps())
        return pb.ListNotificationsResponse(
            notifications=[mapping.notification_to_proto(n) for n in page.notifications],
            next_page_token=page.next_page_token,
        )

    @override
    async def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: Context
    ) -> pb.CreateTemplateResponse:
        command = templates.CreateTemplate(
            template_id=request.template_id,
            content=_content(request.template),
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
        )
        if request.template.channel == pb.CHANNEL_UNSPECIFIED:
            raise InvalidArgument(
                [FieldViolation("template.channel", "is required")], reason="CHANNEL_REQUIRED"
            )
        created = await templates.create_template(command, principal(), self._uow(), self._deps())
        return pb.CreateTemplateResponse(template=mapping.template_to_proto(created))

    @override
    async def UpdateTemplate(
        self, request: pb.UpdateTemplateRequest, context: Context
    ) -> pb.UpdateTemplateResponse:
        command = templates.UpdateTemplate(
            template_id=_template_id(request.template.name),
            content=_content(request.template),
            fields=tuple(request.update_mask.paths),
            etag=request.template.etag,
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
            channel_given=request.template.channel != pb.CHANNEL_UNSPECIFIED,
        )
        updated = await templates.update_template(command, principal(), self._uow(), self._deps())
        return pb.UpdateTemplateResponse(template=mapping.template_to_proto(updated))

    @override
    async def GetTemplate(
        self, request: pb.GetTemplateRequest, context: Context
    ) -> pb.GetTemplateResponse:
        found = await templates.get_template(
            _template_id(request.name), request.version, principal(), self._uow()
        )
        return pb.GetTemplateResponse(template=mapping.template_to_proto(found))

    @override
    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: Context
    ) -> pb.ListTemplatesResponse:
        page = await templates.list_templates(
            request.page_size,
            request.page_token,
            _channel(request.channel, "channel", required=False),
            principal(),
            self._uow(),
        )
        return pb.ListTemplatesResponse(
            templates=[mapping.template_to_proto(t) for t in page.templates],
            next_page_token=page.next_page_token,
        )

    @override
    async def SetPreferences(
        self, request: pb.SetPreferencesRequest, context: Context
    ) -> pb.SetPreferencesResponse:
        p = request.preferences
        quiet = None
        if p.HasField("quiet_hours"):
            q = p.quiet_hours
            quiet = prefs.QuietHoursInput(
                start=prefs.TimeInput(
                    q.start_time.hours,
                    q.start_time.minutes,
                    q.start_time.seconds,
                    q.start_time.nanos,
                )
                if q.HasField("start_time")
                else None,
                end=prefs.TimeInput(
                    q.end_time.hours, q.end_time.minutes, q.end_time.seconds, q.end_time.nanos
                )
                if q.HasField("end_time")
                else None,
                time_zone=q.time_zone,
            )
        command = prefs.SetPreferences(
            name=p.name,
            channels=tuple(
                prefs.ChannelPreferenceInput(
                    channel=mapping.CHANNEL_FROM_PROTO.get(c.channel),
                    opted_out=c.opted_out,
                    address=_address(c.address) if c.HasField("address") else None,
                )
                for c in p.channels
            ),
            quiet_hours=quiet,
            marketing_opt_in=p.marketing_opt_in,
            preferred_locale=p.preferred_locale,
            fields=tuple(request.update_mask.paths),
            etag=p.etag,
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
        )
        saved = await prefs.set_preferences(command, principal(), self._uow(), self._deps())
        return pb.SetPreferencesResponse(preferences=mapping.preferences_to_proto(saved))

    @override
    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: Context
    ) -> pb.GetPreferencesResponse:
        found = await prefs.get_preferences(request.name, principal(), self._uow(), self._deps())
        return pb.GetPreferencesResponse(preferences=mapping.preferences_to_proto(found))

    @override
    async def WatchDeliveries(
        self, request: pb.WatchDeliveriesRequest, context: Context
    ) -> AsyncIterator[pb.WatchDeliveriesResponse]:
        query = WatchDeliveries(
            notification_id=request.name.removeprefix("notifications/"),
            channels=frozenset(
                c for c in (mapping.CHANNEL_FROM_PROTO.get(v) for v in request.channels) if c
            ),
            resume_after=request.resume_after,
        )
        items = watch_deliveries(
            query, principal(), self._uow, self._live, self._deps(), self._stopping
        )
        async for item in items:
            if isinstance(item, ChangeItem):
                yield pb.WatchDeliveriesResponse(
                    delivery_update=mapping.change_to_proto(item.change, first=item.first)
                )
            else:
                yield pb.WatchDeliveriesResponse(
                    heartbeat=common_pb2.Heartbeat(
                        time=mapping.timestamp(item.time), last_event_id=item.last_event_id
                    )
                )

    @override
    async def GetDeliveryStats(
        self, request: pb.GetDeliveryStatsRequest, context: Context
    ) -> pb.GetDeliveryStatsResponse:
        time_range = request.time_range
        stats = await queries.delivery_stats(
            _time(time_range.start_time) if time_range.HasField("start_time") else None,
            _time(time_range.end_time) if time_range.HasField("end_time") else None,
            tuple(mapping.CHANNEL_FROM_PROTO.get(c) for c in request.channels),
            tuple(mapping.CATEGORY_FROM_PROTO.get(c) for c in request.categories),
            self._uow(),
            self._deps(),
        )
        return pb.GetDeliveryStatsResponse(
            time_range=common_pb2.TimeRange(
                start_time=mapping.timestamp(stats.start), end_time=mapping.timestamp(stats.end)
            ),
            counts=[
                pb.DeliveryCount(
                    channel=mapping.CHANNEL_TO_PROTO[row.channel],
                    status=mapping.STATUS_TO_PROTO[row.status],
                    count=row.count,
                )
                for row in stats.rows
            ],
            total_count=stats.total,
        )
