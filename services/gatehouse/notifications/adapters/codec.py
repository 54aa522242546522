"""JSON documents of the domain objects: stored notification snapshots, template content,
preferences, and the replies idempotent RPCs replay. Versioned by shape, not by number: every
reader tolerates a missing optional key."""

from __future__ import annotations

import json
from datetime import datetime, time
from typing import Any

from gatehouse.notifications.domain.addresses import Address, AddressKind, Channel
from gatehouse.notifications.domain.notifications import (
    Attempt,
    Category,
    Delivery,
    DeliveryChange,
    HoldReason,
    Notification,
    Outcome,
    Priority,
    RecipientSpec,
    Status,
    SuppressionReason,
    TemplateUse,
)
from gatehouse.notifications.domain.preferences import ChannelPreference, Preferences, QuietHours
from gatehouse.notifications.domain.templates import (
    Actor,
    Localization,
    Template,
    TemplateContent,
    TemplateVariable,
)

Doc = dict[str, Any]


def _t(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: object) -> datetime | None:
    return None if not isinstance(value, str) else datetime.fromisoformat(value)


def _req_dt(value: object) -> datetime:
    parsed = _dt(value)
    if parsed is None:
        raise ValueError("missing timestamp")
    return parsed


def address_doc(address: Address | None) -> Doc | None:
    return None if address is None else {"kind": address.kind.value, "value": address.value}


def address_from(doc: object) -> Address | None:
    if not isinstance(doc, dict):
        return None
    return Address(AddressKind(doc["kind"]), str(doc["value"]))


def actor_doc(actor: Actor) -> Doc:
    return {"user": actor.user, "service": actor.service, "client_address": actor.client_address}


def actor_from(doc: Doc) -> Actor:
    return Actor(doc.get("user", ""), doc.get("service", ""), doc.get("client_address", ""))


def attempt_doc(attempt: Attempt) -> Doc:
    return {
        "number": attempt.number,
        "start_time": _t(attempt.start_time),
        "end_time": _t(attempt.end_time),
        "outcome": attempt.outcome.value,
        "provider": attempt.provider,
        "provider_response": attempt.provider_response,
        "provider_message_id": attempt.provider_message_id,
        "error_code": attempt.error_code,
        "error_message": attempt.error_message,
    }


def attempt_from(doc: Doc) -> Attempt:
    return Attempt(
        number=int(doc["number"]),
        start_time=_req_dt(doc["start_time"]),
        end_time=_req_dt(doc["end_time"]),
        outcome=Outcome(doc["outcome"]),
        provider=doc.get("provider", ""),
        provider_response=doc.get("provider_response", ""),
        provider_message_id=doc.get("provider_message_id", ""),
        error_code=doc.get("error_code", ""),
        error_message=doc.get("error_message", ""),
    )


def notification_doc(n: Notification, *, with_attempts: bool = True) -> Doc:
    """Everything but the deliverable copy (stored apart, erased when final)."""
    doc: Doc = {
        "id": n.id,
        "recipient": {
            "user": n.recipient.user,
            "role": n.recipient.role,
            "address": address_doc(n.recipient.address),
        },
        "user": n.user,
        "address": address_doc(n.address),
        "channel": n.channel.value,
        "template": None
        if n.template is None
        else {
            "name": n.template.name,
            "version": n.template.version,
            "locale": n.template.locale,
            "variables": [list(pair) for pair in n.template.variables],
        },
        "subject": n.subject,
        "text_body": n.text_body,
        "priority": int(n.priority),
        "category": n.category.value,
        "status": n.status.value,
        "hold_reason": None if n.hold_reason is None else n.hold_reason.value,
        "suppression_reason": None if n.suppression_reason is None else n.suppression_reason.value,
        "schedule_time": _t(n.schedule_time),
        "next_attempt_time": _t(n.next_attempt_time),
        "sender": actor_doc(n.sender),
        "batch_id": n.batch_id,
        "related_resource": n.related_resource,
        "create_time": _t(n.create_time),
        "update_time": _t(n.update_time),
        "send_time": _t(n.send_time),
        "provider_message_id": n.provider_message_id,
        "failure_code": n.failure_code,
        "failure_message": n.failure_message,
        "version": n.version,
    }
    if n.attempt_base:
        doc["attempt_base"] = n.attempt_base
    if with_attempts:
        doc["attempts"] = [attempt_doc(a) for a in n.attempts]
    return doc


def notification_from(
    doc: Doc, *, attempts: tuple[Attempt, ...] | None = None, delivery: Delivery | None = None
) -> Notification:
    recipient = doc["recipient"]
    template = doc.get("template")
    return Notification(
        id=doc["id"],
        recipient=RecipientSpec(
            user=recipient.get("user", ""),
            role=recipient.get("role", ""),
            address=address_from(recipient.get("address")),
        ),
        user=doc.get("user", ""),
        address=address_from(doc.get("address")),
        channel=Channel(doc["channel"]),
        template=None
        if not template
        else TemplateUse(
            name=template["name"],
            version=int(template["version"]),
            locale=template.get("locale", ""),
            variables=tuple((str(k), str(v)) for k, v in template.get("variables", [])),
        ),
        subject=doc.get("subject", ""),
        text_body=doc.get("text_body", ""),
        priority=Priority(int(doc["priority"])),
        category=Category(doc["category"]),
        status=Status(doc["status"]),
        hold_reason=HoldReason(doc["hold_reason"]) if doc.get("hold_reason") else None,
        suppression_reason=SuppressionReason(doc["suppression_reason"])
        if doc.get("suppression_reason")
        else None,
        schedule_time=_dt(doc.get("schedule_time")),
        next_attempt_time=_dt(doc.get("next_attempt_time")),
        sender=actor_from(doc.get("sender", {})),
        batch_id=doc.get("batch_id", ""),
        related_resource=doc.get("related_resource", ""),
        create_time=_req_dt(doc["create_time"]),
        update_time=_req_dt(doc["update_time"]),
        delivery=delivery or Delivery(),
        attempts=attempts
        if attempts is not None
        else tuple(attempt_from(a) for a in doc.get("attempts", [])),
        send_time=_dt(doc.get("send_time")),
        provider_message_id=doc.get("provider_message_id", ""),
        failure_code=doc.get("failure_code", ""),
        failure_message=doc.get("failure_message", ""),
        version=int(doc.get("version", 1)),
        attempt_base=int(doc.get("attempt_base", 0)),
    )


def delivery_doc(delivery: Delivery) -> str:
    return json.dumps(
        {"s": delivery.subject, "t": delivery.text_body, "h": delivery.html_body},
        separators=(",", ":"),
    )


def delivery_from(text: str) -> Delivery:
    if not text:
        return Delivery()
    doc = json.loads(text)
    return Delivery(doc.get("s", ""), doc.get("t", ""), doc.get("h", ""))


def change_doc(change: DeliveryChange) -> Doc:
    return {
        "notification": notification_doc(change.notification),
        "attempt": None if change.attempt is None else attempt_doc(change.attempt),
    }


def change_from(
    doc: Doc,
    *,
    change_id: str,
    sequence: int,
    previous: str | None,
    status: str,
    time_: datetime,
    visible_to: tuple[str, ...],
) -> DeliveryChange:
    notification = notification_from(doc["notification"])
    return DeliveryChange(
        id=change_id,
        notification_id=notification.id,
        sequence=sequence,
        previous_status=Status(previous) if previous else None,
        status=Status(status),
        time=time_,
        notification=notification,
        attempt=None if not doc.get("attempt") else attempt_from(doc["attempt"]),
        visible_to=visible_to,
    )


def content_doc(content: TemplateContent) -> Doc:
    return {
        "display_name": content.display_name,
        "description": content.description,
        "channel": content.channel.value,
        "default_locale": content.default_locale,
        "localizations": [
            {
                "locale": loc.locale,
                "subject": loc.subject,
                "text_body": loc.text_body,
                "html_body": loc.html_body,
            }
            for loc in content.localizations
        ],
        "variables": [
            {
                "name": v.name,
                "description": v.description,
                "required": v.required,
                "default_value": v.default_value,
                "sensitive": v.sensitive,
            }
            for v in content.variables
        ],
    }


def content_from(doc: Doc) -> TemplateContent:
    return TemplateContent(
        display_name=doc.get("display_name", ""),
        description=doc.get("description", ""),
        channel=Channel(doc["channel"]),
        default_locale=doc["default_locale"],
        localizations=tuple(
            Localization(
                loc["locale"],
                loc.get("subject", ""),
                loc.get("text_body", ""),
                loc.get("html_body", ""),
            )
            for loc in doc.get("localizations", [])
        ),
        variables=tuple(
            TemplateVariable(
                v["name"],
                v.get("description", ""),
                bool(v.get("required", False)),
                v.get("default_value", ""),
                bool(v.get("sensitive", False)),
            )
            for v in doc.get("variables", [])
        ),
    )


def template_doc(template: Template) -> Doc:
    return {
        "template_id": template.template_id,
        "content": content_doc(template.content),
        "version": template.version,
        "create_time": _t(template.create_time),
        "update_time": _t(template.update_time),
        "version_author": actor_doc(template.version_author),
    }


def template_from(doc: Doc) -> Template:
    return Template(
        template_id=doc["template_id"],
        content=content_from(doc["content"]),
        version=int(doc["version"]),
        create_time=_req_dt(doc["create_time"]),
        update_time=_req_dt(doc["update_time"]),
        version_author=actor_from(doc.get("version_author", {})),
    )


def _time_doc(value: time) -> str:
    return value.isoformat()


def preferences_doc(p: Preferences) -> Doc:
    return {
        "user": p.user,
        "channels": [
            {
                "channel": c.channel.value,
                "opted_out": c.opted_out,
                "address": address_doc(c.address),
            }
            for c in p.channels
        ],
        "quiet_hours": None
        if p.quiet_hours is None
        else {
            "start": _time_doc(p.quiet_hours.start),
            "end": _time_doc(p.quiet_hours.end),
            "time_zone": p.quiet_hours.time_zone,
        },
        "marketing_opt_in": p.marketing_opt_in,
        "preferred_locale": p.preferred_locale,
        "version": p.version,
        "update_time": _t(p.update_time),
    }


def preferences_from(doc: Doc) -> Preferences:
    quiet = doc.get("quiet_hours")
    return Preferences(
        user=doc["user"],
        channels=tuple(
            ChannelPreference(
                Channel(c["channel"]), bool(c.get("opted_out")), address_from(c.get("address"))
            )
            for c in doc.get("channels", [])
        ),
        quiet_hours=None
        if not quiet
        else QuietHours(
            time.fromisoformat(quiet["start"]),
            time.fromisoformat(quiet["end"]),
            quiet["time_zone"],
        ),
        marketing_opt_in=bool(doc.get("marketing_opt_in")),
        preferred_locale=doc.get("preferred_locale", ""),
        version=int(doc.get("version", 0)),
        update_time=_dt(doc.get("update_time")),
    )


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)
