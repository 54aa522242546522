"""Between the contract's messages and the domain: enums both ways, and domain -> proto for
what the RPCs return. Requests are read field by field in the servicer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time

from google.protobuf import timestamp_pb2
from google.type import timeofday_pb2

from gatehouse.common.v1 import common_pb2
from gatehouse.notifications.domain.addresses import Address, AddressKind, Channel
from gatehouse.notifications.domain.notifications import (
    Attempt,
    Category,
    DeliveryChange,
    HoldReason,
    Notification,
    Outcome,
    Priority,
    Status,
    SuppressionReason,
)
from gatehouse.notifications.domain.preferences import Preferences
from gatehouse.notifications.domain.templates import Actor, Template
from gatehouse.notifications.v1 import notifications_pb2 as pb

CHANNEL_TO_PROTO: Mapping[Channel, pb.Channel.ValueType] = {
    Channel.EMAIL: pb.CHANNEL_EMAIL,
    Channel.SMS: pb.CHANNEL_SMS,
    Channel.WHATSAPP: pb.CHANNEL_WHATSAPP,
    Channel.PUSH: pb.CHANNEL_PUSH,
    Channel.CHAT: pb.CHANNEL_CHAT,
    Channel.WEBHOOK: pb.CHANNEL_WEBHOOK,
}
CHANNEL_FROM_PROTO: Mapping[int, Channel] = {v: k for k, v in CHANNEL_TO_PROTO.items()}

PRIORITY_TO_PROTO: Mapping[Priority, pb.Priority.ValueType] = {
    Priority.LOW: pb.PRIORITY_LOW,
    Priority.NORMAL: pb.PRIORITY_NORMAL,
    Priority.HIGH: pb.PRIORITY_HIGH,
    Priority.CRITICAL: pb.PRIORITY_CRITICAL,
}
PRIORITY_FROM_PROTO: Mapping[int, Priority] = {v: k for k, v in PRIORITY_TO_PROTO.items()}

CATEGORY_TO_PROTO: Mapping[Category, pb.Category.ValueType] = {
    Category.TRANSACTIONAL: pb.CATEGORY_TRANSACTIONAL,
    Category.ALERT: pb.CATEGORY_ALERT,
    Category.SECURITY: pb.CATEGORY_SECURITY,
    Category.EMERGENCY: pb.CATEGORY_EMERGENCY,
    Category.MARKETING: pb.CATEGORY_MARKETING,
}
CATEGORY_FROM_PROTO: Mapping[int, Category] = {v: k for k, v in CATEGORY_TO_PROTO.items()}

STATUS_TO_PROTO: Mapping[Status, pb.NotificationStatus.ValueType] = {
    Status.QUEUED: pb.NOTIFICATION_STATUS_QUEUED,
    Status.SCHEDULED: pb.NOTIFICATION_STATUS_SCHEDULED,
    Status.SENDING: pb.NOTIFICATION_STATUS_SENDING,
    Status.SENT: pb.NOTIFICATION_STATUS_SENT,
    Status.FAILED: pb.NOTIFICATION_STATUS_FAILED,
    Status.SUPPRESSED: pb.NOTIFICATION_STATUS_SUPPRESSED,
    Status.DEAD_LETTERED: pb.NOTIFICATION_STATUS_DEAD_LETTERED,
}
STATUS_FROM_PROTO: Mapping[int, Status] = {v: k for k, v in STATUS_TO_PROTO.items()}

HOLD_TO_PROTO: Mapping[HoldReason, pb.HoldReason.ValueType] = {
    HoldReason.SCHEDULED: pb.HOLD_REASON_SCHEDULED,
    HoldReason.QUIET_HOURS: pb.HOLD_REASON_QUIET_HOURS,
    HoldReason.RATE_LIMITED: pb.HOLD_REASON_RATE_LIMITED,
    HoldReason.RETRY_BACKOFF: pb.HOLD_REASON_RETRY_BACKOFF,
}
SUPPRESSION_TO_PROTO: Mapping[SuppressionReason, pb.SuppressionReason.ValueType] = {
    SuppressionReason.OPTED_OUT: pb.SUPPRESSION_REASON_OPTED_OUT,
    SuppressionReason.NO_ADDRESS: pb.SUPPRESSION_REASON_NO_ADDRESS,
    SuppressionReason.RECIPIENT_INACTIVE: pb.SUPPRESSION_REASON_RECIPIENT_INACTIVE,
}
OUTCOME_TO_PROTO: Mapping[Outcome, pb.AttemptOutcome.ValueType] = {
    Outcome.SUCCEEDED: pb.ATTEMPT_OUTCOME_SUCCEEDED,
    Outcome.TRANSIENT_FAILURE: pb.ATTEMPT_OUTCOME_TRANSIENT_FAILURE,
    Outcome.PERMANENT_FAILURE: pb.ATTEMPT_OUTCOME_PERMANENT_FAILURE,
}
ADDRESS_KIND_FROM_FIELD: Mapping[str, AddressKind] = {kind.value: kind for kind in AddressKind}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def time_of_day(value: time) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(
        hours=value.hour,
        minutes=value.minute,
        seconds=value.second,
        nanos=value.microsecond * 1000,
    )


def actor_to_proto(actor: Actor) -> common_pb2.Actor:
    return common_pb2.Actor(
        user=actor.user, service=actor.service, client_address=actor.client_address
    )


def address_to_proto(address: Address | None) -> pb.Address | None:
    if address is None:
        return None
    message = pb.Address()
    setattr(message, address.kind.value, address.value)
    return message


def attempt_to_proto(attempt: Attempt) -> pb.DeliveryAttempt:
    return pb.DeliveryAttempt(
        attempt_number=attempt.number,
        start_time=timestamp(attempt.start_time),
        end_time=timestamp(attempt.end_time),
        outcome=OUTCOME_TO_PROTO[attempt.outcome],
        provider=attempt.provider,
        provider_response=attempt.provider_response,
        provider_message_id=attempt.provider_message_id,
        error_code=attempt.error_code,
        error_message=attempt.error_message,
    )


def notification_to_proto(n: Notification) -> pb.Notification:
    recipient = pb.Recipient()
    if n.recipient.user:
        recipient.user = n.recipient.user
    elif n.recipient.role:
        recipient.role = n.recipient.role
    elif (literal := address_to_proto(n.recipient.address)) is not None:
        recipient.address.CopyFrom(literal)
    template = None
    if n.template is not None:
        template = pb.TemplateReference(
            name=n.template.name,
            version=n.template.version,
            locale=n.template.locale,
            variables=dict(n.template.variables),
        )
    return pb.Notification(
        name=n.name,
        recipient=recipient,
        user=n.user,
        address=address_to_proto(n.address),
        channel=CHANNEL_TO_PROTO[n.channel],
        template=template,
        subject=n.subject,
        text_body=n.text_body,
        priority=PRIORITY_TO_PROTO[n.priority],
        category=CATEGORY_TO_PROTO[n.category],
        status=STATUS_TO_PROTO[n.status],
        hold_reason=HOLD_TO_PROTO[n.hold_reason]
        if n.hold_reason and n.status is Status.SCHEDULED
        else 0,  # type: ignore[arg-type]
        suppression_reason=SUPPRESSION_TO_PROTO[n.suppression_reason]
        if n.suppression_reason
        else 0,  # type: ignore[arg-type]
        schedule_time=timestamp(n.schedule_time),
        next_attempt_time=timestamp(n.next_attempt_time)
        if n.status in (Status.QUEUED, Status.SCHEDULED)
        else None,
        attempts=[attempt_to_proto(a) for a in n.attempts],
        provider_message_id=n.provider_message_id,
        failure_code=n.failure_code,
        failure_message=n.failure_message,
        sender=actor_to_proto(n.sender),
        batch_id=n.batch_id,
        related_resource=n.related_resource,
        create_time=timestamp(n.create_time),
        update_time=timestamp(n.update_time),
        send_time=timestamp(n.send_time),
    )


def change_to_proto(change: DeliveryChange, *, first: bool = False) -> pb.DeliveryUpdate:
    previous = change.previous_status
    return pb.DeliveryUpdate(
        event_id=change.id,
        previous_status=pb.NOTIFICATION_STATUS_UNSPECIFIED
        if first or previous is None
        else STATUS_TO_PROTO[previous],
        status=STATUS_TO_PROTO[change.status],
        change_time=timestamp(change.time),
        attempt=None if change.attempt is None else attempt_to_proto(change.attempt),
        notification=notification_to_proto(change.notification),
    )


def template_to_proto(template: Template) -> pb.Template:
    content = template.content
    return pb.Template(
        name=template.name,
        display_name=content.display_name,
        description=content.description,
        channel=CHANNEL_TO_PROTO[content.channel],
        default_locale=content.default_locale,
        localizations=[
            pb.TemplateLocalization(
                locale=loc.locale,
                subject=loc.subject,
                text_body=loc.text_body,
                html_body=loc.html_body,
            )
            for loc in content.localizations
        ],
        variables=[
            pb.TemplateVariable(
                name=v.name,
                description=v.description,
                required=v.required,
                default_value=v.default_value,
                sensitive=v.sensitive,
            )
            for v in content.variables
        ],
        version=template.version,
        etag=template.etag,
        create_time=timestamp(template.create_time),
        update_time=timestamp(template.update_time),
        version_author=actor_to_proto(template.version_author),
    )


def preferences_to_proto(p: Preferences) -> pb.NotificationPreferences:
    quiet = None
    if p.quiet_hours is not None:
        quiet = pb.QuietHours(
            start_time=time_of_day(p.quiet_hours.start),
            end_time=time_of_day(p.quiet_hours.end),
            time_zone=p.quiet_hours.time_zone,
        )
    return pb.NotificationPreferences(
        name=p.name,
        channels=[
            pb.ChannelPreference(
                channel=CHANNEL_TO_PROTO[c.channel],
                opted_out=c.opted_out,
                address=address_to_proto(c.address),
            )
            for c in p.channels
        ],
        quiet_hours=quiet,
        marketing_opt_in=p.marketing_opt_in,
        preferred_locale=p.preferred_locale,
        etag=p.etag,
        update_time=timestamp(p.update_time),
    )
